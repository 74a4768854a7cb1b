"""nPrint rows -> IP packets (L3 header + L4 header + payload), vectorized over packets.

Decode uses this to rebuild captures from bits alone, and repair/serve use it to emit the packets
of generated flows. All bytes are assembled in one numpy buffer with per-packet offsets by two compiled passes over
the rows (sizes, then header bytes); the only per-packet Python work is slicing the final buffer
into ``bytes`` objects.

Rules (per row):
- network header: ``ipv4`` if its fixed bits are present, else ``ipv6``, else none (the packet is
  returned as ``b""``); its length is the leading run of fully present bytes (IPv4 options
  included), at least the fixed header size;
- transport header: the first present of ``tcp``, ``udp``, ``icmp`` (layout order), with the
  length of its leading run of present bytes (TCP options included);
- payload: ``payload_lengths`` if given, else what the IPv4 total length / IPv6 payload length
  leaves after the headers (never negative); zero-filled, or random bytes with ``payload="random"``.
"""

from __future__ import annotations

import numpy as np

from netdiffusion.fields import ABSENT_WORD, HEADERS, Layout, absent_bytes, row_words, word_byte
from netdiffusion.jit import kernel

L3_HEADERS = ("ipv4", "ipv6")
L4_HEADERS = ("tcp", "udp", "icmp")


@kernel
def _fixed_part(hdr: np.ndarray, fixed: int) -> int:
    """A header's fixed part (its first ``fixed`` words): 0 if every column is ABSENT (the header
    is absent), 1 if some are, 2 if none is. No early exit: the loop over the words is vectorized."""
    every = ABSENT_WORD
    holes = np.uint64(0)
    for j in range(fixed):
        every &= hdr[j]
        holes |= absent_bytes(hdr[j])
    if every == ABSENT_WORD:
        return 0
    return 1 if holes else 2


@kernel
def _choose(row: np.ndarray, spec: np.ndarray) -> tuple[int, int]:
    """``(index, bytes)`` of the first header of ``spec`` (:func:`_header_spec`) that the row (its
    words) carries, -1 and 0 for none. Its bytes are :meth:`Layout.header_bytes`' length (leading
    words without an ABSENT column) raised to its fixed size: options count only after a complete
    fixed part."""
    for h in range(spec.shape[0]):
        w0, fixed, total = spec[h, 0], spec[h, 1], spec[h, 2]
        if w0 < 0:
            continue
        hdr = row[w0 : w0 + total]
        state = _fixed_part(hdr, fixed)
        if state == 0:
            continue
        size = fixed
        if state == 2:
            while size < total and not absent_bytes(hdr[size]):
                size += 1
        return h, size
    return -1, 0


@kernel
def _sizes(words: np.ndarray, stride: int, l3: np.ndarray, l4: np.ndarray, length_fields: np.ndarray,
           payload_in: np.ndarray, l3_choice: np.ndarray, l4_choice: np.ndarray, l3_len: np.ndarray,
           l4_len: np.ndarray, payload: np.ndarray) -> None:
    """Per row: the network and transport header chosen and their bytes, and the payload bytes
    (``payload_in`` if it has a value per row, else what the L3 length field leaves).

    ``l3`` / ``l4``: per candidate header, as :func:`_header_spec` gives them; ``length_fields``:
    per L3 candidate, as :func:`_length_fields` gives them."""
    given = payload_in.shape[0] == l3_choice.shape[0]
    for i in range(l3_choice.shape[0]):
        row = words[i * stride : (i + 1) * stride]
        c3, n3 = _choose(row, l3)
        c4, n4 = _choose(row, l4) if c3 >= 0 else (-1, 0)
        l3_choice[i], l3_len[i], l4_choice[i], l4_len[i] = c3, n3, c4, n4
        if c3 < 0:
            payload[i] = 0
        elif given:
            payload[i] = max(payload_in[i], 0)
        else:
            col, width = length_fields[c3, 0], length_fields[c3, 1]
            value = 0
            for c in range(col, col + width):  # Layout.field_values: -1 if a bit is ABSENT
                b = np.int64(row[c >> 3] >> np.uint64(8 * (c & 7))) & 0xFF
                if b == 0xFF:
                    value = -1
                    break
                value = (value << 1) | (1 if 1 <= b <= 127 else 0)
            after = max(value, 0) - (n3 if length_fields[c3, 2] else 0)  # bytes after the L3 header
            payload[i] = max(after - n4, 0)


@kernel
def _write_headers(words: np.ndarray, stride: int, l3: np.ndarray, l4: np.ndarray, l3_choice: np.ndarray,
                   l4_choice: np.ndarray, l3_len: np.ndarray, l4_len: np.ndarray, starts: np.ndarray,
                   buf: np.ndarray) -> None:
    """Each row's L3 then L4 header bytes (one word of the row per byte) into ``buf`` at ``starts``."""
    for i in range(l3_choice.shape[0]):
        row = words[i * stride : (i + 1) * stride]
        at = starts[i]
        for spec, c, size in ((l3, l3_choice[i], l3_len[i]), (l4, l4_choice[i], l4_len[i])):
            if c < 0:
                break
            w0 = spec[c, 0]
            k = min(size, spec[c, 2])
            hdr = row[w0 : w0 + k]
            out = buf[at : at + k]
            for j in range(k):
                out[j] = word_byte(hdr[j])
            at += size


@kernel
def _place(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, data: np.ndarray) -> None:
    """``data``'s bytes, in order, into ``buf[starts[i] : starts[i] + sizes[i]]`` row after row."""
    k = 0
    for i in range(starts.shape[0]):
        a = starts[i]
        for j in range(sizes[i]):
            buf[a + j] = data[k]
            k += 1


def _header_spec(layout: Layout, candidates: tuple[str, ...]) -> np.ndarray:
    """Per candidate header: ``(first word, fixed words, words)`` in a row read as uint64 words
    (8 columns each, one header byte), first word -1 where ``layout`` lacks it."""
    spec = np.full((len(candidates), 3), -1, dtype=np.int64)
    for i, h in enumerate(candidates):
        if h in layout.headers:
            spec[i] = (layout.header_slice(h).start // 8, HEADERS[h].min_bits // 8, HEADERS[h].bytes)
    return spec


def _length_fields(layout: Layout) -> np.ndarray:
    """Per L3 candidate: column and width of its length field, and 1 where that length counts the
    L3 header itself (IPv4 total length) or 0 where it does not (IPv6 payload length)."""
    out = np.zeros((len(L3_HEADERS), 3), dtype=np.int64)
    for i, (h, key, counts_header) in enumerate((("ipv4", "ipv4_tl", 1), ("ipv6", "ipv6_len", 0))):
        if h in layout.headers:
            sl = layout.field_slice(key)
            out[i] = (sl.start, sl.stop - sl.start, counts_header)
    return out


def packet_lengths(layout: Layout, matrix: np.ndarray,
                   payload_lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-row byte lengths implied by the bits: ``l3``, ``l4``, ``payload`` and header choices.

    One compiled pass over the rows (each reads only the words it needs: most rows stop at the
    first word of each header's presence test and at the first absent option byte)."""
    n = matrix.shape[0]
    if payload_lengths is None:
        given = np.zeros(0, dtype=np.int64)
    else:
        given = np.asarray(payload_lengths, dtype=np.int64).reshape(-1)
        if given.shape[0] != n:
            raise ValueError(f"{n} rows but {given.shape[0]} payload lengths")
    out = {k: np.empty(n, dtype=np.int64) for k in ("l3", "l4", "payload", "l3_choice", "l4_choice")}
    if n:
        words, stride, _ = row_words(matrix, 0, layout.width)
        _sizes(words, stride, _header_spec(layout, L3_HEADERS), _header_spec(layout, L4_HEADERS),
               _length_fields(layout), given, out["l3_choice"], out["l4_choice"], out["l3"], out["l4"],
               out["payload"])
    return out


def build_ip_buffer(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                    payload: str = "zero", rng: np.random.Generator | None = None,
                    gap_before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IP packets of ``matrix``'s rows in one uint8 buffer: ``(buffer, starts, ends)``.

    Packet ``i`` is ``buffer[starts[i]:ends[i]]``. ``gap_before`` (bytes per row, optional) leaves
    that many zero bytes before each packet, e.g. for pcap record and Ethernet headers, so a
    writer can fill them in place instead of copying every packet. The bytes (random payloads
    included, same ``rng`` draws) are those of :func:`build_ip_packets`."""
    if payload not in ("zero", "random"):
        raise ValueError(f"payload must be 'zero' or 'random', not {payload!r}")
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[1] != layout.width:
        raise ValueError(f"matrix shape {matrix.shape} does not match layout width {layout.width}")
    n = matrix.shape[0]
    info = packet_lengths(layout, matrix, payload_lengths)
    sizes = info["l3"] + info["l4"] + info["payload"]
    gap = np.zeros(n, dtype=np.int64) if gap_before is None else np.asarray(gap_before, dtype=np.int64)
    ends = np.cumsum(sizes + gap)
    starts = ends - sizes
    total = int(ends[-1]) if n else 0
    if payload == "random":
        rng = rng if rng is not None else np.random.default_rng()
        draws = rng.integers(0, 256, size=int(sizes.sum()), dtype=np.uint8)
        if gap_before is None or not gap.any():
            buf = draws
        else:  # the same draws as without gaps, each packet's share moved to its place
            buf = np.zeros(total, dtype=np.uint8)
            _place(buf, starts, sizes, draws)
    else:
        buf = np.zeros(total, dtype=np.uint8)
    if not n:
        return buf, starts, ends
    words, stride, _ = row_words(matrix, 0, layout.width)
    _write_headers(words, stride, _header_spec(layout, L3_HEADERS), _header_spec(layout, L4_HEADERS),
                   info["l3_choice"], info["l4_choice"], info["l3"], info["l4"], starts, buf)
    return buf, starts, ends


def build_ip_packets(layout: Layout, matrix: np.ndarray, payload_lengths: np.ndarray | None = None,
                     payload: str = "zero", rng: np.random.Generator | None = None) -> list[bytes]:
    """IP packets (bytes, starting at the IP header) for the rows of an nPrint ``matrix``.

    ``payload`` is ``"zero"`` (default) or ``"random"`` (uniform bytes from ``rng``). Rows with no
    network header give ``b""``."""
    buf, starts, ends = build_ip_buffer(layout, matrix, payload_lengths, payload, rng)
    raw = buf.tobytes()
    return [raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
