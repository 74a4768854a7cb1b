"""Streaming, vectorized capture reader: pcap / pcapng (optionally gzip-compressed).

A capture is read in chunks of ``chunk_bytes``; each chunk yields a :class:`RecordBatch` that holds
the raw chunk as one numpy buffer plus per-record arrays (offset, captured and wire length,
timestamp in ns, link type, 1-based frame number). Memory therefore stays flat however large the
file is. The only per-record Python work is the walk over record lengths (each record's position
depends on the previous one's length); everything after that is numpy over whole batches.

Malformed input raises :class:`CaptureError` with a one-line reason; callers name the file.
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    # magic as it appears in the file -> (struct byte order, ticks per second)
    b"\xd4\xc3\xb2\xa1": ("<", 1_000_000),
    b"\xa1\xb2\xc3\xd4": (">", 1_000_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1_000_000_000),
    b"\xa1\xb2\x3c\x4d": (">", 1_000_000_000),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
MAX_RECORD = 1 << 24  # no link layer frame is 16 MiB; a larger length means a corrupt record
DEFAULT_CHUNK = 8 << 20  # measured: 8 MiB beats 1, 4 and 32 MiB (cache-friendly, few batches)


class CaptureError(Exception):
    """A capture that cannot be read; the message is a one-line reason."""


class TruncatedCapture(CaptureError):
    """The file ends inside a record (a capture stopped mid-write). Raised after every complete
    record has been yielded, so a reader may keep those (as tshark does) and report the tail."""


@dataclass
class RecordBatch:
    """Consecutive records of one capture; ``data`` holds their bytes at ``offset``."""

    data: np.ndarray  # uint8
    offset: np.ndarray  # int64, start of each record's frame in data
    caplen: np.ndarray  # int64, bytes captured
    wirelen: np.ndarray  # int64, original length on the wire
    ts_ns: np.ndarray  # int64, ns since the epoch
    linktype: np.ndarray  # int64 per record (pcapng interfaces may differ)
    frame: np.ndarray  # int64, 1-based record number in the capture

    def __len__(self) -> int:
        return int(self.offset.shape[0])


def _open(path: str | os.PathLike) -> io.BufferedIOBase:
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed by iter_records
    if fh.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


# other capture formats Wireshark reads that we do not, with the way to convert them
_OTHER_FORMATS = {b"\xa1\xb2\xcd\x34": "modified (Kuznetzov) pcap", b"\x34\xcd\xb2\xa1": "modified (Kuznetzov) pcap"}


def _not_a_capture(head: bytes) -> str:
    other = _OTHER_FORMATS.get(bytes(head[:4]))
    if other:
        return f"{other}, not read here: convert it with `editcap -F pcap FILE OUT.pcap`"
    return f"not a pcap or pcapng file (magic {bytes(head[:4]).hex()})"


def capture_format(path: str | os.PathLike) -> str:
    """``pcap``, ``pcapng`` (``+gzip`` when compressed); raises CaptureError otherwise."""
    with _open(path) as fh:
        try:
            head = fh.read(4)
        except (OSError, EOFError, zlib.error) as exc:
            raise CaptureError(f"unreadable: {exc}") from exc
        gz = isinstance(fh, gzip.GzipFile)
    if len(head) < 4:
        raise CaptureError("empty or shorter than a capture header")
    kind = "pcap" if head in PCAP_MAGICS else "pcapng" if head == PCAPNG_SHB else None
    if kind is None:
        raise CaptureError(_not_a_capture(head))
    return kind + ("+gzip" if gz else "")


class _Chunks:
    """Reads a stream in chunks, keeping the unconsumed tail of the previous chunk."""

    def __init__(self, fh: io.BufferedIOBase, chunk_bytes: int) -> None:
        self.fh = fh
        self.chunk_bytes = chunk_bytes
        self.buf: bytes | bytearray = b""
        self.eof = False

    def fill(self, need: int = 0) -> None:
        """Append at least one chunk (or up to ``need`` bytes in total) unless at end of file.

        Reads straight into a fresh buffer (``readinto``): no concatenation copy, and batches
        already handed out keep their own buffer."""
        size = len(self.buf)
        target = max(size + self.chunk_bytes, need)
        buf = bytearray(target)
        buf[:size] = self.buf
        view = memoryview(buf)
        while size < target and not self.eof:
            try:
                got = self.fh.readinto(view[size:])
            except (OSError, EOFError, zlib.error) as exc:  # zlib.error: corrupt deflate data
                raise CaptureError(f"read error: {exc}") from exc
            if not got:
                self.eof = True
                break
            size += got
        view.release()
        del buf[size:]
        self.buf = buf


class _MappedChunks:
    """:class:`_Chunks` over a memory-mapped uncompressed file: windows are views, nothing is copied.

    Reading an 8 MiB chunk into a fresh buffer cost more CPU than parsing it (page faults on the new
    buffer, the kernel copy, the tail copy): on pinterest.pcap (28 MB, 17,657 packets) the reader
    took ~60% of the encode's CPU time. ``buf`` may only be set to a suffix of itself (records
    consumed); the pages before it are then dropped from this process (``MADV_DONTNEED`` on a
    read-only file mapping just unmaps them), so resident memory stays flat however long the file."""

    def __init__(self, fh: io.BufferedIOBase, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.view = memoryview(self.mm)
        self.size = len(self.mm)
        self.start = self.end = 0
        self.released = 0  # page-aligned offset below which pages were dropped
        self.eof = False

    @property
    def buf(self) -> memoryview:
        return self.view[self.start:self.end]

    @buf.setter
    def buf(self, rest: bytes | bytearray | memoryview) -> None:
        self.start = self.end - len(rest)
        drop = (self.start // mmap.PAGESIZE) * mmap.PAGESIZE
        if drop - self.released >= self.chunk_bytes and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED, self.released, drop - self.released)
            self.released = drop

    def fill(self, need: int = 0) -> None:
        target = max(self.end - self.start + self.chunk_bytes, need)
        self.end = min(self.start + target, self.size)
        self.eof = self.end >= self.size


def _pcap_chunks(fh: io.BufferedIOBase, chunk_bytes: int) -> _Chunks | _MappedChunks:
    """Memory-mapped chunks for a plain pcap file, read chunks otherwise (gzip, pipes, empty files)."""
    if not isinstance(fh, gzip.GzipFile):
        try:
            if os.fstat(fh.fileno()).st_size > 24:
                return _MappedChunks(fh, chunk_bytes)
        except (OSError, ValueError, io.UnsupportedOperation):
            pass
    fh.seek(0)
    return _Chunks(fh, chunk_bytes)


def iter_records(path: str | os.PathLike, chunk_bytes: int = DEFAULT_CHUNK) -> Iterator[RecordBatch]:
    """Yield the records of a pcap or pcapng capture (gzip allowed) in batches."""
    with _open(path) as fh:
        chunks = _Chunks(fh, 24)  # sniff the magic without reading a whole chunk
        chunks.fill(24)
        chunks.chunk_bytes = chunk_bytes
        head = bytes(chunks.buf[:4])
        if len(chunks.buf) < 4:
            raise CaptureError("empty or shorter than a capture header")
        if head in PCAP_MAGICS:
            fh.seek(0)
            chunks = _pcap_chunks(fh, chunk_bytes)
            chunks.fill(24)
            yield from _pcap_records(chunks)  # type: ignore[arg-type]
        elif head == PCAPNG_SHB:
            yield from _pcapng_records(chunks)
        else:
            raise CaptureError(_not_a_capture(head))


def _too_long(record: int, incl: int, snaplen: int) -> None:
    raise CaptureError(f"record {record}: captured length {incl} exceeds snap length {snaplen} "
                       "(corrupt record header)")


def _walk(buf: memoryview | bytes, end: int, incl_at) -> list[int]:
    """Start offsets of the whole records in ``buf[:end]``: the one sequential step (each record
    starts where the previous one ends), kept to the fewest Python operations per record (measured
    ~75 ns/record; lengths are range-checked afterwards, vectorized, by the caller)."""
    starts: list[int] = []
    append = starts.append
    pos = 0
    last = end - 16  # a header must fit
    while pos <= last:
        nxt = pos + 16 + incl_at(buf, pos)[0]
        if nxt > end:
            break
        append(pos)
        pos = nxt
    return starts


def _pcap_records(chunks: _Chunks) -> Iterator[RecordBatch]:
    buf = chunks.buf
    if len(buf) < 24:
        raise CaptureError(f"pcap header cut short ({len(buf)} of 24 bytes)")
    order, ticks = PCAP_MAGICS[bytes(buf[:4])]
    major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(order + "HHiIII", buf, 4)
    if major < 2:  # an archaic layout (Wireshark and libpcap refuse it too): not read as version 2
        raise CaptureError(f"pcap format version {major}.{minor} is not supported (2.x expected)")
    linktype &= 0xFFFF  # the upper 16 bits carry FCS length, its P flag and reserved bits (libpcap LT_LINKTYPE)
    limit = max(snaplen, 262144, MAX_RECORD if snaplen == 0 else 0)
    limit = min(limit, MAX_RECORD)
    incl_at = struct.Struct(order + "8xI").unpack_from  # a record header's captured length
    chunks.buf = buf[24:]
    frame = 1
    rec_dtype = np.dtype([("sec", order + "u4"), ("frac", order + "u4"), ("incl", order + "u4"),
                          ("orig", order + "u4")])
    while True:
        if not chunks.eof:
            chunks.fill()
        buf = chunks.buf
        end = len(buf)
        starts = _walk(buf, end, incl_at)
        pos = 0
        if starts:
            data = np.frombuffer(buf, dtype=np.uint8)
            offs = np.array(starts, dtype=np.int64)
            # the 16-byte record headers, one strided row copy each (no index matrix)
            rows = np.ndarray((end - 15, 16), np.uint8, buffer=data, strides=(1, 1))
            recs = rows[offs].view(rec_dtype).reshape(-1)
            caplen = recs["incl"].astype(np.int64)
            pos = int(offs[-1] + 16 + caplen[-1])
            bad = np.flatnonzero(caplen > limit)
            if len(bad):  # checked after the walk: the first corrupt length decides
                _too_long(frame + int(bad[0]), int(caplen[bad[0]]), snaplen)
        if pos + 16 <= end and incl_at(buf, pos)[0] > limit:  # the next header, even if not all read
            _too_long(frame + len(starts), incl_at(buf, pos)[0], snaplen)
        if starts:
            n = len(offs)
            ts = recs["sec"].astype(np.int64) * 1_000_000_000
            frac = recs["frac"].astype(np.int64)
            ts += frac * (1_000_000_000 // ticks)
            yield RecordBatch(
                data=data,
                offset=offs + 16,
                caplen=caplen,
                wirelen=recs["orig"].astype(np.int64),
                ts_ns=ts,
                linktype=np.full(n, linktype, dtype=np.int64),
                frame=np.arange(frame, frame + n, dtype=np.int64),
            )
            frame += n
        chunks.buf = buf[pos:]
        if chunks.eof:
            if chunks.buf:
                raise TruncatedCapture(f"record {frame}: cut short ({len(chunks.buf)} trailing bytes; "
                                       "file truncated)")
            if frame == 1:
                raise CaptureError("no packets")
            return
        if not starts and len(chunks.buf) >= chunks.chunk_bytes:
            chunks.fill(len(chunks.buf) + MAX_RECORD)  # one record larger than a chunk


# -- pcapng ----------------------------------------------------------------------------------------

_EPB, _SPB, _OPB, _IDB, _SHB = 6, 3, 2, 1, 0x0A0D0D0A
# blocks Wireshark (4.0) shows as frames though they hold no packet: custom blocks (copyable or
# not), systemd journal entries and sysdig events. They count in the ``frame`` numbers, which
# follow Wireshark's (wiretap/pcapng.c: the blocks it returns as records)
_FRAME_ONLY_BLOCKS = frozenset({0x00000BAD, 0x40000BAD, 0x00000009, 0x00000204, 0x00000216, 0x00000221})


def _tsresol_ns(code: int) -> tuple[int, int]:
    """(multiplier, divisor) turning pcapng ticks into ns for an if_tsresol value."""
    # exponents past what 64-bit ticks can mean (only corrupt files have them) are clamped, as
    # Wireshark does, so the interface table stays int64
    if code & 0x80:
        # power of two: ns = ticks * 1e9 / 2**e (exact in integers for e <= 30 via divisor)
        return 1_000_000_000, 1 << min(code & 0x7F, 62)
    exp = min(code, 18)
    if exp <= 9:
        return 10 ** (9 - exp), 1
    return 1, 10 ** (exp - 9)


def _options(buf: memoryview | bytes, start: int, stop: int, order: str, block: str) -> Iterator[tuple[int, int, int]]:
    """``(code, value offset, value length)`` of each option of the block's list
    (``buf[start:stop]``), up to opt_endofopt; raises CaptureError when one runs past the block:
    a damaged header whose other fields cannot be trusted (Wireshark refuses the file)."""
    at = start
    while at + 4 <= stop:
        code, size = struct.unpack_from(order + "HH", buf, at)
        if code == 0:  # opt_endofopt
            return
        if at + 4 + size > stop:
            raise CaptureError(f"pcapng {block} block: option {code} of {size} bytes runs past the block "
                               "(damaged)")
        yield code, at + 4, size
        at += 4 + ((size + 3) & ~3)


def _pcapng_records(chunks: _Chunks) -> Iterator[RecordBatch]:
    order = "<"
    # every interface of every section so far, (linktype, snaplen, mul, div); a record keeps the
    # index into this list, so records of an earlier section in the same chunk keep its interfaces
    interfaces: list[tuple[int, int, int, int]] = []
    base = 0  # index of the current section's interface 0
    frame = 1
    packets = 0
    seen_shb = False
    while True:
        if not chunks.eof:
            chunks.fill()
        buf = chunks.buf
        end = len(buf)
        pos = 0
        # frame start, caplen, wirelen, ts_hi, ts_lo, interface (global index), has timestamp, frame
        recs: list[tuple[int, int, int, int, int, int, int, int]] = []
        frame_at = frame  # the frame number of the next block Wireshark shows as a frame
        while pos + 12 <= end:
            if buf[pos:pos + 4] == PCAPNG_SHB:
                if pos + 12 > end:
                    break
                bom = buf[pos + 8:pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    order = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    order = ">"
                else:
                    raise CaptureError(f"pcapng section header with bad byte-order magic {bom.hex()}")
            btype, blen = struct.unpack_from(order + "II", buf, pos)
            if blen < 12 or blen % 4 or blen > MAX_RECORD:
                raise CaptureError(f"pcapng block at record {frame_at}: bad block length {blen}")
            if pos + blen > end:
                break
            if btype == _SHB:
                if blen < 28:
                    raise CaptureError(f"pcapng section header block of {blen} bytes (at least 28)")
                major, minor = struct.unpack_from(order + "HH", buf, pos + 12)
                if major != 1 or minor not in (0, 2):  # 1.2: written by some tools, read as 1.0
                    raise CaptureError(f"pcapng section header version {major}.{minor} is not supported "
                                       "(1.0 expected)")
                for _ in _options(buf, pos + 24, pos + blen - 4, order, "section header"):
                    pass  # (checked, not used)
                seen_shb = True
                base = len(interfaces)
            elif not seen_shb:
                raise CaptureError("pcapng without a section header block")
            elif btype == _IDB:
                if blen < 20:
                    raise CaptureError(f"pcapng interface description block of {blen} bytes (at least 20)")
                linktype, _res, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
                mul, div = 1000, 1  # default resolution: microseconds
                for code, at, size in _options(buf, pos + 16, pos + blen - 4, order, "interface description"):
                    if code == 9 and size >= 1:
                        mul, div = _tsresol_ns(buf[at])
                interfaces.append((linktype, snaplen, mul, div))
            elif btype == _EPB or btype == _OPB:
                if btype == _EPB:
                    ifc, hi, lo, cap, wire = struct.unpack_from(order + "IIIII", buf, pos + 8)
                else:
                    ifc, _drops, hi, lo, cap, wire = struct.unpack_from(order + "HHIIII", buf, pos + 8)
                if ifc >= len(interfaces) - base:
                    raise CaptureError(f"record {frame_at}: unknown interface {ifc}")
                if 28 + cap > blen - 4:
                    raise CaptureError(f"record {frame_at}: captured length {cap} exceeds its block")
                recs.append((pos + 28, cap, wire, hi, lo, base + ifc, 1, frame_at))
                frame_at += 1
            elif btype == _SPB:
                if len(interfaces) == base:
                    raise CaptureError(f"record {frame_at}: simple packet block before any interface")
                (wire,) = struct.unpack_from(order + "I", buf, pos + 8)
                snap = interfaces[base][1] or wire
                cap = min(wire, snap, blen - 16)
                recs.append((pos + 12, cap, wire, 0, 0, base, 0, frame_at))
                frame_at += 1
            elif btype in _FRAME_ONLY_BLOCKS:
                frame_at += 1
            pos += blen
        if recs:
            arr = np.asarray(recs, dtype=np.int64)
            ifc_idx = arr[:, 5]
            info = np.asarray(interfaces, dtype=np.int64).reshape(-1, 4)
            ticks = (arr[:, 3] << 32) | arr[:, 4]
            mul, div = info[ifc_idx, 2], info[ifc_idx, 3]
            div = np.maximum(div, 1)
            # split so power-of-two resolutions (mul = 1e9, div = 2**e) do not overflow int64
            ts = np.where(div == 1, ticks * mul, (ticks // div) * mul + ((ticks % div) * mul) // div)
            ts = np.where(arr[:, 6] == 0, 0, ts)  # simple packet blocks carry no timestamp
            n = len(recs)
            yield RecordBatch(
                data=np.frombuffer(buf, dtype=np.uint8),
                offset=arr[:, 0],
                caplen=arr[:, 1],
                wirelen=arr[:, 2],
                ts_ns=ts,
                linktype=info[ifc_idx, 0],
                frame=arr[:, 7].copy(),
            )
            packets += n
        frame = frame_at
        chunks.buf = buf[pos:]
        if chunks.eof:
            if chunks.buf:
                raise TruncatedCapture(f"record {frame}: cut short ({len(chunks.buf)} trailing bytes; "
                                       "file truncated)")
            if packets == 0:
                raise CaptureError("no packets")
            return
        if not recs and len(chunks.buf) >= chunks.chunk_bytes:
            chunks.fill(len(chunks.buf) + MAX_RECORD)
