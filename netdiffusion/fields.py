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

from netdiffusion import bitwords

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
        s = self.header_slice(header)
        fixed = HEADERS[header].min_bits
        return (matrix[:, s.start : s.start + fixed] != ABSENT).any(axis=1)

    def presence(self, matrix: np.ndarray) -> np.ndarray:
        """``(packets, headers)`` boolean table of which headers each packet carries."""
        return np.stack([self.header_present(matrix, h) for h in self.headers], axis=1)

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
        if f.width > 1 and bitwords.usable(matrix) and sl.stop - (sl.start - sl.start % 8) <= 64:
            words, first, _ = bitwords.block(matrix, None, sl)  # 8 columns at a time, same values
            return bitwords.values(words, sl.start - first, sl.stop - first, absent="minus_one")
        bits = self.field_bits(matrix, f)
        weights = (np.int64(1) << np.arange(f.width - 1, -1, -1, dtype=np.int64))
        values = (np.clip(bits, 0, 1).astype(np.int64) * weights).sum(axis=1)
        values[(bits == ABSENT).any(axis=1)] = -1
        return values

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


_BYTE_SUM = np.uint64(0x0101010101010101)


def row_counts(flags: np.ndarray) -> np.ndarray:
    """Number of True per row of a 2-D bool array (int64).

    Eight flags at a time: a uint64 holding eight 0/1 bytes times 0x0101..01 has their sum in its
    top byte (``count_nonzero(axis=1)`` on bool is ~10x slower)."""
    flags = np.ascontiguousarray(flags, dtype=bool)
    n, w = flags.shape
    if w % 8 or not n:
        return np.count_nonzero(flags, axis=1).astype(np.int64)
    words = flags.view(np.uint64)
    return ((words * _BYTE_SUM) >> np.uint64(56)).sum(axis=1, dtype=np.int64)


def present_bytes(bits: np.ndarray) -> np.ndarray:
    """``(rows, bits // 8)`` bool: every bit of the byte is present (not ``ABSENT``).

    All 8 bits present <=> the byte's 8 bools read as one uint64 are 0x0101...01: 30x faster than
    ``.all()`` over an 8-wide axis (repair and decode call this for every header)."""
    return np.ascontiguousarray(bits != ABSENT).view(np.uint64) == _BYTE_SUM


def bytes_to_bits(data: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The inverse of :func:`packed_bytes`: ``(rows, bytes)`` uint8 and the number of leading
    bytes present per row -> ``(rows, 8 * bytes)`` int8 bits, ``ABSENT`` past each row's length
    (one table lookup per byte, as :meth:`Layout.header_bits_from_bytes`)."""
    index = np.where(np.arange(data.shape[1])[None, :] >= np.asarray(lengths)[:, None], 256,
                     np.asarray(data, dtype=np.int16))
    return np.take(_BYTE_BITS_U64, index).view(np.int8).reshape(index.shape[0], 8 * data.shape[1])


def packed_bytes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of byte-aligned bits -> ``(data, lengths)``: uint8 bytes with absent bits read as 0, and
    the number of leading bytes whose bits are all present (nPrint's absence is a suffix)."""
    present = present_bytes(bits)
    lengths = np.where(present.all(axis=1), present.shape[1], np.argmin(present, axis=1))
    return np.packbits(bits > 0, axis=1), lengths.astype(np.int64)


DEFAULT_LAYOUT = Layout()
