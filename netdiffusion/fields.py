"""The nPrint field table: the one place any code learns a header layout.

nPrint (Holland et al., CCS 2021) represents a packet as the bits of its headers, in wire order,
one column per bit: 1 / 0 for set / unset and -1 for every bit of a header the packet does not
have (and for option bytes beyond the header's actual length). We use nPrint's header sets,
column names and bit order so our files interoperate with nPrint and with the original
NetDiffusion artefacts.

Everything that needs a layout -- encoder, decoder, image codec, repair, metrics, plots -- reads
it from here through :class:`Layout`. Bit ``k`` of a header is bit ``7 - k % 8`` of its byte
``k // 8`` (most significant bit first), so a field's bits read left to right are its value in
big-endian order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from netdiffusion.jit import kernel

ABSENT = -1
"""Value of every bit of a header (or option byte) that a packet does not have."""


@dataclass(frozen=True)
class Field:
    """One header field: ``width`` bits starting ``offset`` bits into its header."""

    header: str
    name: str
    offset: int
    width: int

    @property
    def key(self) -> str:
        """nPrint's column prefix, e.g. ``tcp_syn``; also the field's id in reports."""
        return f"{self.header}_{self.name}"

    def columns(self) -> list[str]:
        return [f"{self.key}_{i}" for i in range(self.width)]


@dataclass(frozen=True)
class Header:
    """A protocol header: its fields in wire order and its maximum size in bits."""

    name: str
    layer: int  # 3 for network (ipv4, ipv6), 4 for transport (tcp, udp, icmp)
    fields: tuple[Field, ...]
    min_bits: int  # size without options
    options_field: str | None = None  # name of the variable-length options field, if any

    @property
    def bits(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def bytes(self) -> int:
        return self.bits // 8

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


def _header(name: str, layer: int, spec: Sequence[tuple[str, int]], options: str | None = None) -> Header:
    fields: list[Field] = []
    offset = 0
    for field_name, width in spec:
        fields.append(Field(name, field_name, offset, width))
        offset += width
    min_bits = offset - (dict(spec)[options] if options else 0)
    return Header(name, layer, tuple(fields), min_bits, options)


# The declarative table. Names and widths are nPrint's (nprint/src/*_header.cpp).
HEADERS: dict[str, Header] = {
    h.name: h
    for h in (
        _header(
            "ipv4",
            3,
            [
                ("ver", 4), ("hl", 4), ("tos", 8), ("tl", 16), ("id", 16),
                ("rbit", 1), ("dfbit", 1), ("mfbit", 1), ("foff", 13),
                ("ttl", 8), ("proto", 8), ("cksum", 16), ("src", 32), ("dst", 32),
                ("opt", 320),
            ],
            options="opt",
        ),
        _header(
            "ipv6",
            3,
            [("ver", 4), ("tc", 8), ("fl", 20), ("len", 16), ("nh", 8), ("hl", 8), ("src", 128), ("dst", 128)],
        ),
        _header(
            "tcp",
            4,
            [
                ("sprt", 16), ("dprt", 16), ("seq", 32), ("ackn", 32), ("doff", 4), ("res", 3),
                ("ns", 1), ("cwr", 1), ("ece", 1), ("urg", 1), ("ackf", 1), ("psh", 1),
                ("rst", 1), ("syn", 1), ("fin", 1), ("wsize", 16), ("cksum", 16), ("urp", 16),
                ("opt", 320),
            ],
            options="opt",
        ),
        _header("udp", 4, [("sport", 16), ("dport", 16), ("len", 16), ("cksum", 16)]),
        _header("icmp", 4, [("type", 8), ("code", 8), ("cksum", 16), ("roh", 32)]),
    )
}

DEFAULT_HEADERS: tuple[str, ...] = ("ipv4", "ipv6", "tcp", "udp", "icmp")


@lru_cache(maxsize=64)
def _layout_columns(headers: tuple[str, ...]) -> tuple[str, ...]:
    """Column names of a header set, built once per process (1,408 f-strings cost ~0.5 ms, and
    every encode, read and repair makes a Layout)."""
    return tuple(c for h in headers for f in HEADERS[h].fields for c in f.columns())

# Bits of every byte value, most significant first, plus row 256 = an absent byte (all -1).
_BYTE_BITS = np.vstack([np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.int8),
                        np.full((1, 8), ABSENT, dtype=np.int8)])
_BYTE_BITS_U64 = np.ascontiguousarray(_BYTE_BITS).view(np.uint64).ravel()  # row i as one 8-byte word

# The packed ternary form of nPrint rows: 2 bits per value, code 0 = unset (0), 1 = set (1),
# 2 = absent (-1), four values per byte, the first in the lowest bits. It is exactly the body of
# a Parquet bit-packed run of dictionary indices into [0, 1, -1] (netdiffusion.shard_parquet), and
# 4x smaller than int8 rows. _BYTE_CODES_U16[b]: the 8 bits of byte b (row 256 = absent) as codes.
TERNARY_DICTIONARY = (0, 1, ABSENT)
_BYTE_CODES_U16 = ((np.where(_BYTE_BITS == ABSENT, 2, _BYTE_BITS).astype(np.uint16)
                    << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1).astype(np.uint16))


def pack_ternary(flat: np.ndarray) -> np.ndarray:
    """int8 values in {-1, 0, 1} -> the packed ternary form (uint8, ceil(n / 4) bytes; the last
    byte padded with code 0). Four values per uint32 word: byte & 3 maps 0/1/-1 to 0/1/3, 3 -> 2."""
    n = len(flat)
    if n % 4:
        padded = np.zeros(-(-n // 4) * 4, dtype=np.int8)
        padded[:n] = flat
        flat = padded
    words = np.ascontiguousarray(flat, dtype=np.int8).view("<u4")
    code = np.bitwise_and(words, np.uint32(0x03030303))
    tmp = np.right_shift(code, np.uint32(1))  # two buffers reused (out=): ~4x faster than temporaries
    tmp &= np.uint32(0x01010101)
    code ^= tmp
    np.right_shift(code, np.uint32(6), out=tmp)
    code |= tmp
    np.right_shift(code, np.uint32(12), out=tmp)
    code |= tmp
    return code.astype(np.uint8)


def unpack_ternary(packed: np.ndarray, count: int) -> np.ndarray:
    """The inverse of :func:`pack_ternary`: the first ``count`` int8 values."""
    codes = (np.asarray(packed, dtype=np.uint8)[:, None] >> np.arange(0, 8, 2, dtype=np.uint8)) & 3
    return np.asarray(TERNARY_DICTIONARY + (ABSENT,), dtype=np.int8)[codes.reshape(-1)[:count]]

# IP protocol numbers of the transport headers, shared by encoder, repair and metrics.
IP_PROTO: dict[str, int] = {"tcp": 6, "udp": 17, "icmp": 1}


class Layout:
    """Column layout of an nPrint matrix for a chosen, ordered set of headers.

    A matrix is ``(packets, layout.width)`` int8 holding 1 / 0 / -1. The layout maps headers and
    fields to column ranges and converts between bits and header bytes, vectorized over packets.
    """

    def __init__(self, headers: Iterable[str] = DEFAULT_HEADERS) -> None:
        names = tuple(headers)
        unknown = [h for h in names if h not in HEADERS]
        if unknown:
            raise ValueError(f"unknown nPrint header(s) {unknown}; known: {list(HEADERS)}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate header in {list(names)}")
        # nPrint's own column order is the table's order, whatever order the user lists.
        self.headers: tuple[str, ...] = tuple(h for h in HEADERS if h in names)
        starts: dict[str, int] = {}
        position = 0
        for h in self.headers:
            starts[h] = position
            position += HEADERS[h].bits
        self._starts = starts
        self.width: int = position

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, columns: Sequence[str]) -> Layout:
        """Rebuild a layout from nPrint column names (``fields.json`` or a CSV header)."""
        headers = []
        for c in columns:
            h = c.split("_", 1)[0]
            if h not in headers:
                headers.append(h)
        layout = cls(headers)
        if list(columns) != layout.columns:
            raise ValueError("columns are not a complete nPrint layout in nPrint's order")
        return layout

    # -- names ----------------------------------------------------------------------------------
    @cached_property
    def columns(self) -> list[str]:
        return list(_layout_columns(tuple(self.headers)))

    @cached_property
    def fields(self) -> list[Field]:
        return [f for h in self.headers for f in HEADERS[h].fields]

    def field(self, key: str) -> Field:
        """Look a field up by its key, e.g. ``"tcp_syn"``."""
        header, _, name = key.partition("_")
        if header not in self.headers:
            raise KeyError(f"header {header!r} not in layout {self.headers}")
        return HEADERS[header].field(name)

    # -- column ranges --------------------------------------------------------------------------
    def header_slice(self, header: str) -> slice:
        start = self._starts[header]
        return slice(start, start + HEADERS[header].bits)

    def field_slice(self, field: Field | str) -> slice:
        f = self.field(field) if isinstance(field, str) else field
        start = self._starts[f.header] + f.offset
        return slice(start, start + f.width)

    # -- presence -------------------------------------------------------------------------------
    def header_present(self, matrix: np.ndarray, header: str) -> np.ndarray:
        """Boolean per packet: does the packet carry this header (its fixed part not absent)?"""
        return self._presence(matrix, (header,))[0]

    def presence(self, matrix: np.ndarray) -> np.ndarray:
        """``(packets, headers)`` boolean table of which headers each packet carries (each header's
        column is contiguous: the table is the transpose of a C array)."""
        return self._presence(matrix, self.headers).T

    def _presence(self, matrix: np.ndarray, headers: Sequence[str]) -> np.ndarray:
        # one pass per header: a pass reading one place of every row is prefetched well, one
        # reading several places per row is not (measured 3 ms for five passes, 8 ms for one)
        out = np.empty((len(headers), matrix.shape[0]), dtype=bool)
        if out.size:
            for i, h in enumerate(headers):
                start, k = self.header_slice(h).start, HEADERS[h].min_bits // 8
                words, stride, first = row_words(matrix, start, start + 8 * k)
                _presence(words, stride, first, k, out[i])
        return out

    def present_share(self, matrix: np.ndarray) -> np.ndarray:
        """``(packets, headers)`` share of each header's fixed bits that are not absent.

        Repair's stack decision for noisy generated rows uses this (the paper's rule)."""
        out = np.empty((matrix.shape[0], len(self.headers)), dtype=np.float32)
        for i, h in enumerate(self.headers):
            s = self.header_slice(h)
            fixed = HEADERS[h].min_bits
            out[:, i] = row_counts(matrix[:, s.start : s.start + fixed] != ABSENT) / fixed
        return out

    # -- values ---------------------------------------------------------------------------------
    def field_bits(self, matrix: np.ndarray, field: Field | str) -> np.ndarray:
        return matrix[:, self.field_slice(field)]

    def field_values(self, matrix: np.ndarray, field: Field | str) -> np.ndarray:
        """Integer value of a field per packet (int64), ``-1`` where the field is absent.

        Only for fields of at most 62 bits; use :meth:`field_keys` for addresses and options.
        A field counts as absent when any of its bits is absent."""
        f = self.field(field) if isinstance(field, str) else field
        if f.width > 62:
            raise ValueError(f"{f.key} is {f.width} bits wide; use field_keys()")
        sl = self.field_slice(f)
        out = np.empty(matrix.shape[0], dtype=np.int64)
        if len(out):
            a0, a1 = sl.start - sl.start % 8, -(-sl.stop // 8) * 8
            words, stride, first = row_words(matrix, a0, a1)
            _column_values(words, stride, first, sl.start - a0, f.width, out)
        return out

    def field_keys(self, matrix: np.ndarray, field: Field | str) -> np.ndarray:
        """A hashable categorical key per packet for any field (``np.unique``-able).

        Narrow fields give their integer value (-1 absent); wide fields (addresses, options) give
        the raw bit vector as a fixed-size bytes object, which keeps absence and partial options."""
        f = self.field(field) if isinstance(field, str) else field
        if f.width <= 62:
            return self.field_values(matrix, f)
        bits = np.ascontiguousarray(self.field_bits(matrix, f), dtype=np.int8)
        return bits.view(np.dtype((np.void, f.width))).ravel()

    def set_field(self, matrix: np.ndarray, field: Field | str, values: np.ndarray | int,
                  rows: np.ndarray | slice | None = None) -> None:
        """Write integer values (< 2**62) into a field's bits, in place."""
        f = self.field(field) if isinstance(field, str) else field
        if f.width > 62:
            raise ValueError(f"{f.key} is {f.width} bits wide; write its bits directly")
        rows = slice(None) if rows is None else rows
        v = np.asarray(values, dtype=np.int64)
        shifts = np.arange(f.width - 1, -1, -1, dtype=np.int64)
        bits = ((v[..., None] >> shifts) & 1).astype(np.int8)
        matrix[rows, self.field_slice(f)] = bits

    # -- bytes <-> bits -------------------------------------------------------------------------
    def header_bits_from_bytes(self, header: str, data: np.ndarray, lengths: np.ndarray,
                               out: np.ndarray | None = None) -> np.ndarray:
        """Bits of one header for many packets.

        ``data`` is ``(packets, >= header.bytes)`` uint8 holding each packet's header bytes
        left-aligned; ``lengths`` the header's actual length in bytes per packet (0 = absent).
        Bytes past ``lengths`` become absent (-1), as nPrint pads options. ``out`` (optional): an
        int8 ``(packets, header.bits)`` view to fill in place, e.g. ``matrix[:, header_slice]``
        (saves a temporary and a copy on the encoder's hot path)."""
        h = HEADERS[header]
        # One table lookup per byte (row 256 = an absent byte) instead of unpack + cast + mask:
        # the encoder's hot path, about 3x faster.
        index = np.asarray(data[:, : h.bytes], dtype=np.int16)
        absent = np.arange(h.bytes)[None, :] >= np.asarray(lengths)[:, None]
        index = np.where(absent, 256, index)
        # each table row is 8 bytes: gather them as one uint64 each (measured 8.7 -> 0.6 ms at 17,657 x 60)
        if out is None:
            return np.take(_BYTE_BITS_U64, index).view(np.int8).reshape(index.shape[0], h.bits)
        np.take(_BYTE_BITS_U64, index, out=out.view(np.uint64), mode="clip")  # index is 0..256
        return out

    def header_ternary_from_bytes(self, header: str, data: np.ndarray, lengths: np.ndarray,
                                  out: np.ndarray) -> np.ndarray:
        """:meth:`header_bits_from_bytes` straight to the packed ternary form (no int8 rows): fills
        ``out``, a ``(packets, header.bits // 4)`` uint8 view, two bytes per header byte. The
        encoder's shard writer takes these rows as they are (one lookup per header byte)."""
        h = HEADERS[header]
        codes = out.view("<u2")
        codes[...] = _BYTE_CODES_U16[256]  # every byte absent, then each packet's present bytes
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), h.bytes)
        # rows grouped by header length (a handful of distinct lengths): no per-byte absence mask;
        # one length for all rows (common) needs no row selection at all
        distinct = np.unique(lengths).tolist()
        for length in distinct:
            if length > 0:
                rows = slice(None) if len(distinct) == 1 else np.flatnonzero(lengths == length)
                codes[rows, :length] = _BYTE_CODES_U16[data[rows, :length]]
        return out

    def header_bytes(self, matrix: np.ndarray, header: str) -> tuple[np.ndarray, np.ndarray]:
        """Header bytes from bits, the inverse of :meth:`header_bits_from_bytes`.

        Returns ``(data, lengths)``: ``(packets, header.bytes)`` uint8 with absent bits read as 0,
        and the number of leading bytes whose bits are all present."""
        return packed_bytes(matrix[:, self.header_slice(header)])

    def empty(self, packets: int) -> np.ndarray:
        """A matrix of ``packets`` rows with every bit absent."""
        return np.full((packets, self.width), ABSENT, dtype=np.int8)


# SWAR constants: an int8 row read as little-endian uint64 words holds eight columns per word,
# column 8j + i in byte i of word j (see netdiffusion.bitwords). One word of a header is one byte.
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)
_ONES = np.uint64(0x0101010101010101)
_GATHER = np.uint64(0x8040201008040201)  # eight byte flags (bit 0 of each byte) -> one byte, byte 0 first
_SPREAD = np.uint64(0x0102040810204080)  # one byte replicated -> byte i keeps bit 7 - i
ABSENT_WORD = np.uint64(0xFFFFFFFFFFFFFFFF)  # eight ABSENT (-1) columns
_7, _56 = np.uint64(7), np.uint64(56)


def row_words(matrix: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, int, int]:
    """Columns ``start:stop`` (multiples of 8) of an int8 matrix as ``(words, stride, first)``:
    row ``i``'s columns are the uint64 ``words[i * stride + first :][: (stop - start) // 8]``.

    ``words`` is a flat, read-only view of the matrix itself where its rows can be read as whole
    words (column views of a C-contiguous matrix: no copy), else a copy of those columns. Every
    kernel reads rows this way, so each is compiled for one argument type only. Kernels index
    ``words`` with unsigned (uint64) indices: a signed index costs a wraparound test per access,
    which stops loops from being vectorized (3-5x slower), and a per-row view ``words[a:b]``
    costs two reference count updates per row."""
    if (start % 8 or stop % 8) and stop > start:
        raise ValueError(f"columns {start}:{stop} are not byte aligned")
    a = matrix
    n = a.shape[0] if a.ndim == 2 else 0
    if (a.ndim == 2 and a.dtype == np.int8 and n > 1 and a.strides[1] == 1 and a.strides[0] % 8 == 0
            and a.strides[0] > 0 and a.ctypes.data % 8 == 0 and stop <= a.shape[1]):
        span = (n - 1) * a.strides[0] + stop  # bytes from the first row's start to the last word read
        flat = np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(1,), writeable=False)
        return flat.view(np.uint64), a.strides[0] // 8, start // 8
    cols = np.ascontiguousarray(a[:, start:stop], dtype=np.int8)
    words = cols.view(np.uint64).reshape(-1)
    words.flags.writeable = False
    return words, (stop - start) // 8, 0


@kernel
def word_byte(w: np.uint64) -> np.uint8:
    """Eight int8 columns read as one uint64 word -> the byte they spell: positive columns are 1
    bits (1..127: not zero and sign bit clear), the first column most significant."""
    return np.uint8((((((w & _LOW7) + _LOW7) & ~w & _HIGH) >> _7) * _GATHER) >> _56)


@kernel
def absent_bytes(w: np.uint64) -> np.uint64:
    """Not zero exactly when some column of the word is ABSENT (a 0xFF byte of ``w`` is a zero
    byte of ``~w``; the test for a zero byte is exact, though not per byte)."""
    v = ~w
    return (v - _ONES) & ~v & _HIGH


@kernel
def word_complete(w: np.uint64) -> bool:
    """No column of the word is ABSENT."""
    return absent_bytes(w) == 0


@kernel
def _presence(words: np.ndarray, stride: int, first: int, k: int, out: np.ndarray) -> None:
    """out[i]: some column of the ``k`` words from word ``first`` of row i is not ABSENT. Most rows
    stop at the first word (headers are present or absent as a whole); the others AND the rest
    without an early exit (vectorized)."""
    for i in range(out.shape[0]):
        at = np.uint64(i * stride + first)
        if words[at] != ABSENT_WORD:
            out[i] = True
            continue
        every = ABSENT_WORD
        for j in range(np.uint64(1), np.uint64(k)):
            every &= words[at + j]
        out[i] = every != ABSENT_WORD


@kernel
def _column_values(words: np.ndarray, stride: int, first: int, start: int, width: int, out: np.ndarray) -> None:
    """out[i]: big-endian value of columns ``start : start + width`` (``start`` < 8, ``width`` <= 62)
    of row i's words, positive columns read as 1; -1 where one of them is ABSENT
    (:meth:`Layout.field_values`). Eight columns per step: gathered into one byte."""
    k = (start + width + 7) // 8
    last = start + width - 8 * (k - 1)  # columns of the field in its last word, 1..8
    head = ABSENT_WORD << np.uint64(8 * start)  # bytes of the field's columns in its first word
    tail = ABSENT_WORD if last == 8 else (np.uint64(1) << np.uint64(8 * last)) - np.uint64(1)
    keep0 = np.uint64(0xFF >> start)
    for i in range(out.shape[0]):
        at = np.uint64(i * stride + first)
        value = np.uint64(0)
        gone = np.uint64(0)
        for j in range(k):
            w = words[at + np.uint64(j)]
            mask = ABSENT_WORD
            if j == 0:
                mask &= head
            if j == k - 1:
                mask &= tail
            v = ~(w & mask)  # a zero byte: an ABSENT column of the field
            gone |= (v - _ONES) & ~v & _HIGH
            byte = (((((w & _LOW7) + _LOW7) & ~w & _HIGH) >> _7) * _GATHER) >> _56
            if j == 0:
                byte &= keep0
            if j == k - 1:
                value = (value << np.uint64(last)) | (byte >> np.uint64(8 - last))
            else:
                value = (value << np.uint64(8)) | byte
        out[i] = -1 if gone else np.int64(value)


@kernel
def _pack_words(words: np.ndarray, stride: int, first: int, data: np.ndarray, lengths: np.ndarray) -> None:
    """Per row: each of its words as one byte (positive columns are 1 bits, first column most
    significant) into ``data``, and the number of leading words without an ABSENT column."""
    k = data.shape[1]
    for i in range(data.shape[0]):
        at = np.uint64(i * stride + first)
        for j in range(k):  # no branch: vectorized
            data[i, j] = word_byte(words[at + np.uint64(j)])
        run = k
        for j in range(k):
            if not word_complete(words[at + np.uint64(j)]):
                run = j
                break
        lengths[i] = run


@kernel
def _present_words(words: np.ndarray, stride: int, first: int, out: np.ndarray) -> None:
    """out[i, j]: word j of row i has no ABSENT column."""
    k = out.shape[1]
    for i in range(out.shape[0]):
        at = np.uint64(i * stride + first)
        for j in range(k):
            out[i, j] = word_complete(words[at + np.uint64(j)])


@kernel
def _row_counts(flags: np.ndarray, out: np.ndarray) -> None:
    for i in range(flags.shape[0]):
        c = 0
        for j in range(flags.shape[1]):
            c += flags[i, j]
        out[i] = c


def row_counts(flags: np.ndarray) -> np.ndarray:
    """Number of True per row of a 2-D bool array (int64): one compiled pass
    (``count_nonzero(axis=1)`` on bool is ~10x slower)."""
    flags = np.ascontiguousarray(flags, dtype=bool)
    out = np.empty(flags.shape[0], dtype=np.int64)
    if flags.size:
        _row_counts(flags.view(np.uint8), out)
    else:
        out[:] = 0
    return out


def present_bytes(bits: np.ndarray) -> np.ndarray:
    """``(rows, bits // 8)`` bool: every bit of the byte is present (not ``ABSENT``).

    A word (8 columns) is present when none of its bytes is 0xFF: one compiled pass over the
    words, without a ``bits != ABSENT`` temporary (repair and decode call this for every header)."""
    n, width = bits.shape
    out = np.empty((n, width // 8), dtype=bool)
    if out.size:
        words, stride, first = row_words(bits, 0, width)
        _present_words(words, stride, first, out)
    return out


@kernel
def _byte_words(data: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> None:
    """out[i, j]: byte ``data[i, j]`` as eight int8 columns (0 / 1, most significant first) in one
    word, or eight ABSENT columns from ``lengths[i]`` on."""
    for i in range(data.shape[0]):
        n = min(max(lengths[i], 0), data.shape[1])
        for j in range(n):
            t = (np.uint64(data[i, j]) * _ONES) & _SPREAD  # byte j keeps bit 7 - j
            out[i, j] = ((t + _LOW7) & _HIGH) >> _7
        for j in range(n, data.shape[1]):
            out[i, j] = ABSENT_WORD


def bytes_to_bits(data: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The inverse of :func:`packed_bytes`: ``(rows, bytes)`` uint8 and the number of leading
    bytes present per row -> ``(rows, 8 * bytes)`` int8 bits, ``ABSENT`` past each row's length
    (one compiled pass writing a word of eight columns per byte)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    n, k = data.shape
    out = np.empty((n, k), dtype=np.uint64)
    lengths = np.ascontiguousarray(np.broadcast_to(np.asarray(lengths, dtype=np.int64), (n,)))
    if out.size:
        _byte_words(data, lengths, out)
    return out.view(np.int8).reshape(n, 8 * k)


def packed_bytes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of byte-aligned bits -> ``(data, lengths)``: uint8 bytes with absent bits read as 0, and
    the number of leading bytes whose bits are all present (nPrint's absence is a suffix).

    One compiled pass over the rows' words (a column view of the matrix is read in place)."""
    n, width = bits.shape
    data = np.empty((n, width // 8), dtype=np.uint8)
    lengths = np.empty(n, dtype=np.int64)
    if data.size:
        words, stride, first = row_words(bits, 0, width)
        _pack_words(words, stride, first, data, lengths)
    else:
        lengths[:] = data.shape[1]
    return data, lengths


DEFAULT_LAYOUT = Layout()
