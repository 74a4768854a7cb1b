"""Parquet shards: a writer (and a reader) specialised for the one column that dominates them.

Why not ``pyarrow.parquet.write_table``: ``nprint`` is a ``fixed_size_list<int8>[W]`` column, and
pyarrow writes a list value by value: a repetition and a definition level for each of W values per
packet, then each int8 widened to INT32 (measured on 4,123 pinterest rows, W = 1,408: ~31 ms of a
~55 ms encode). Here every row has exactly W values from {-1, 0, 1}, so the levels are one
repeating byte pattern and the values are a 3-entry dictionary whose 2-bit indices are packed four
to a byte with a few vectorized integer operations (~3 ms for the same rows, and smaller files).

The file is standard Parquet (format 2.6; pages v1; RLE/bit-packed levels; RLE_DICTIONARY values;
ZSTD pages; min/max statistics on the metadata columns) with the same Parquet schema and the same
``ARROW:schema`` key pyarrow itself writes for :func:`netdiffusion.dataset.schema`, so pyarrow,
DuckDB, Spark or pandas read it back as the contract's ``fixed_size_list<int8>[W]``. Anything this
writer does not specialise (empty shards, nulls, values outside -1/0/1) returns ``None`` and the
caller falls back to pyarrow; nothing is lost.

Reading: pyarrow decodes the same levels value by value again (~5 us per 1,408-value row).
:func:`read_nprint` reads the ``nprint`` column of files this writer wrote straight from their
pages (zstd, then one table lookup per packed byte), and returns ``None`` for any other file,
which then goes through pyarrow as before.

The Thrift compact protocol used by Parquet's footer and page headers is encoded and decoded by
hand below (a few dozen lines each way).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netdiffusion.fields import TERNARY_DICTIONARY, pack_ternary

MAGIC = b"PAR1"
CREATED_BY = b"netdiffusion shard writer (parquet-format 2.6)"
PAGE_VALUES = 1 << 20  # nprint values per data page: ~745 rows at 1,408 columns; a page's temporaries stay
# in L2 cache (measured on 4,123 pinterest rows: 3.2 ms per shard vs 7.3 ms at 1 << 22, same size on disk)
ZSTD_LEVEL = 1

# Parquet enums (parquet.thrift)
_INT32, _INT64, _BYTE_ARRAY = 1, 2, 6
_REQUIRED, _OPTIONAL, _REPEATED = 0, 1, 2
_UTF8, _LIST, _INT_8 = 0, 3, 15
_PLAIN, _RLE, _RLE_DICTIONARY = 0, 3, 8
_UNCOMPRESSED, _ZSTD = 0, 6
_DATA_PAGE, _DICTIONARY_PAGE = 0, 2

# Thrift compact protocol type ids
_T_TRUE, _T_FALSE, _T_BYTE, _T_I32, _T_I64, _T_BINARY, _T_LIST, _T_STRUCT = 1, 2, 3, 5, 6, 8, 9, 12


# -- Thrift compact protocol (write only) -----------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _value(kind: str, value: object) -> bytes:
    if kind in ("i32", "i64"):
        return _zigzag(int(value))  # type: ignore[arg-type]
    if kind == "byte":
        return struct.pack("b", value)
    if kind == "bin":
        data = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[arg-type]
        return _varint(len(data)) + data
    if kind == "struct":
        return value  # type: ignore[return-value]  # already encoded by _struct
    raise ValueError(kind)


_TYPE_IDS = {"i32": _T_I32, "i64": _T_I64, "byte": _T_BYTE, "bin": _T_BINARY, "struct": _T_STRUCT}


def _struct(*fields: tuple[int, str, object]) -> bytes:
    """One Thrift struct: ``(field id, kind, value)`` triples in id order; ``None`` values are
    omitted. Kinds: i32, i64, byte, bin, bool, struct (encoded bytes), list:<kind> (a sequence)."""
    out = bytearray()
    last = 0
    for fid, kind, value in fields:
        if value is None:
            continue
        if kind == "bool":
            type_id = _T_TRUE if value else _T_FALSE
        elif kind.startswith("list:"):
            type_id = _T_LIST
        else:
            type_id = _TYPE_IDS[kind]
        delta = fid - last
        if 0 < delta <= 15:
            out.append((delta << 4) | type_id)
        else:
            out.append(type_id)
            out += _zigzag(fid)
        last = fid
        if kind.startswith("list:"):
            elem = kind[5:]
            items = list(value)  # type: ignore[call-overload]
            size = len(items)
            elem_id = _TYPE_IDS[elem]
            out += bytes([(size << 4) | elem_id]) if size < 15 else bytes([0xF0 | elem_id]) + _varint(size)
            for item in items:
                out += _value(elem, item)
        elif kind != "bool":
            out += _value(kind, value)
    out.append(0)  # stop
    return bytes(out)


@lru_cache(maxsize=1)
def _zstd() -> pa.Codec:
    return pa.Codec("zstd", compression_level=ZSTD_LEVEL)


# -- Parquet building blocks --------------------------------------------------------------------------

def _rle_run(count: int, value: int, bit_width: int) -> bytes:
    """One run of the RLE/bit-packed hybrid: ``count`` copies of ``value``."""
    return _varint(count << 1) + value.to_bytes((bit_width + 7) // 8, "little")


def _levels(data: bytes) -> bytes:
    """A v1 data page's level section: 4-byte length, then the RLE/bit-packed hybrid."""
    return struct.pack("<I", len(data)) + data


def _bitpack(values: np.ndarray, bit_width: int) -> bytes:
    """Non-negative ints (< 2**bit_width) as one bit-packed run of the hybrid encoding."""
    groups = -(-len(values) // 8)
    padded = np.zeros(groups * 8, dtype="<u4")
    padded[: len(values)] = values
    bits = np.unpackbits(padded.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")[:, :bit_width]
    return _varint((groups << 1) | 1) + np.packbits(bits.reshape(-1), bitorder="little").tobytes()


def _ternary_rows_ok(matrix: np.ndarray) -> bool:
    return matrix.size == 0 or (int(matrix.min()) >= -1 and int(matrix.max()) <= 1)


class _Chunk:
    """One column chunk: its pages' bytes, offsets and the metadata the footer needs."""

    def __init__(self, path: list[str], physical: int, encodings: list[int], compress: bool = True) -> None:
        self.path = path
        self.compress = compress  # the codec is per column chunk: tiny ones (one RLE run) stay plain
        self.physical = physical
        self.encodings = encodings
        self.pages: list[bytes] = []
        self.uncompressed = 0
        self.num_values = 0
        self.dictionary_offset: int | None = None
        self.data_offset = 0
        self.start = 0
        self.stats: bytes | None = None

    def page(self, page_type: int, body: bytes, header: bytes, num_values: int = 0) -> None:
        compressed = _zstd().compress(body, asbytes=True) if self.compress else body
        head = _struct((1, "i32", page_type), (2, "i32", len(body)), (3, "i32", len(compressed)),
                       (5, "struct", header if page_type == _DATA_PAGE else None),
                       (7, "struct", header if page_type == _DICTIONARY_PAGE else None))
        self.pages += [head, compressed]
        self.uncompressed += len(head) + len(body)
        self.num_values += num_values

    def size(self) -> int:
        return sum(len(p) for p in self.pages)

    def meta(self) -> bytes:
        col = _struct((1, "i32", self.physical), (2, "list:i32", self.encodings), (3, "list:bin", self.path),
                      (4, "i32", _ZSTD if self.compress else _UNCOMPRESSED), (5, "i64", self.num_values), (6, "i64", self.uncompressed),
                      (7, "i64", self.size()), (9, "i64", self.data_offset),
                      (11, "i64", self.dictionary_offset), (12, "struct", self.stats))
        return _struct((2, "i64", self.start), (3, "struct", col))


def _data_page_header(num_values: int, encoding: int) -> bytes:
    return _struct((1, "i32", num_values), (2, "i32", encoding), (3, "i32", _RLE), (4, "i32", _RLE))


def _stats(lo: bytes, hi: bytes) -> bytes:
    return _struct((3, "i64", 0), (5, "bin", hi), (6, "bin", lo))


@dataclass
class DictionaryColumn:
    """A string column given as its distinct values and one index per row (what the encoder has
    anyway: flow sample numbers and names; one label per shard), so no row string is built."""

    indices: np.ndarray  # int, one per row, into ``values``
    values: list[str]

    def __len__(self) -> int:
        return len(self.indices)

    def to_numpy(self) -> np.ndarray:
        return np.asarray(self.values, dtype=object)[self.indices]


def plain_columns(columns: dict[str, np.ndarray | DictionaryColumn]) -> dict[str, np.ndarray]:
    """``columns`` with every :class:`DictionaryColumn` as a plain object array (for pyarrow)."""
    return {k: v.to_numpy() if isinstance(v, DictionaryColumn) else v for k, v in columns.items()}


def _string_chunk(name: str, values: np.ndarray | DictionaryColumn) -> _Chunk | None:
    n = len(values)
    if isinstance(values, DictionaryColumn):
        if not all(isinstance(v, str) for v in values.values):
            return None  # a null (or non-string) value: pyarrow's writer
        words = [v.encode() for v in values.values]
        width = max(1, (len(words) - 1).bit_length())
        runs = _rle_run(n, 0, width) if len(words) == 1 else _bitpack(values.indices.astype("<u4"), width)
    elif isinstance(values[0], str) and values.dtype == object and bool((values == values[0]).all()):
        first = values[0]
        words = [first.encode()]  # one value (a shard's label, macro, source): one RLE run
        width = 1
        runs = _rle_run(n, 0, width)
    else:
        array = pa.array(values, pa.string())
        if array.null_count:
            return None
        encoded = array.dictionary_encode()
        words = [s.encode() for s in encoded.dictionary.to_pylist()]
        width = max(1, (len(words) - 1).bit_length())
        runs = _bitpack(encoded.indices.to_numpy(zero_copy_only=False).astype("<u4", copy=False), width)
    chunk = _Chunk([name], _BYTE_ARRAY, [_PLAIN, _RLE, _RLE_DICTIONARY], compress=len(words) > 1)
    plain = b"".join(struct.pack("<I", len(w)) + w for w in words)
    chunk.page(_DICTIONARY_PAGE, plain, _struct((1, "i32", len(words)), (2, "i32", _PLAIN)))
    body = _levels(_rle_run(n, 1, 1)) + bytes([width]) + runs
    chunk.page(_DATA_PAGE, body, _data_page_header(n, _RLE_DICTIONARY), n)
    chunk.stats = _stats(min(words), max(words))
    return chunk


def _int_chunk(name: str, values: np.ndarray, bits: int) -> _Chunk:
    physical, dtype = (_INT64, "<i8") if bits == 64 else (_INT32, "<i4")
    data = np.ascontiguousarray(values, dtype=dtype)
    chunk = _Chunk([name], physical, [_PLAIN, _RLE])
    n = len(data)
    body = _levels(_rle_run(n, 1, 1)) + data.tobytes()
    chunk.page(_DATA_PAGE, body, _data_page_header(n, _PLAIN), n)
    chunk.stats = _stats(data.min().tobytes(), data.max().tobytes())
    return chunk


def _nprint_chunk(matrix: np.ndarray | None, ternary: np.ndarray | None, width: int) -> _Chunk:
    """The nprint column from int8 rows, or from rows already in the packed ternary form (the
    dictionary indices themselves, see :func:`netdiffusion.fields.pack_ternary`)."""
    rows = len(matrix) if matrix is not None else len(ternary)  # type: ignore[arg-type]
    chunk = _Chunk(["nprint", "list", "element"], _INT32, [_PLAIN, _RLE, _RLE_DICTIONARY])
    chunk.page(_DICTIONARY_PAGE, np.array(TERNARY_DICTIONARY, dtype="<i4").tobytes(),
               _struct((1, "i32", len(TERNARY_DICTIONARY)), (2, "i32", _PLAIN)))
    # repetition level 0 starts a row, 1 continues it; definition level 2 = a value is present
    # (nprint optional: 1, the repeated list: 2, element required)
    row_levels = _rle_run(1, 0, 1) + (_rle_run(width - 1, 1, 1) if width > 1 else b"")
    step = max(1, PAGE_VALUES // width)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        count = (stop - start) * width
        if ternary is not None:
            packed = ternary[start:stop].tobytes()
        else:
            packed = pack_ternary(matrix[start:stop].reshape(-1)).tobytes()  # type: ignore[index]
        groups = -(-count // 8)  # a run holds whole groups of 8 values; padding codes are ignored
        values = _varint((groups << 1) | 1) + packed + bytes(2 * groups - len(packed))
        body = (_levels(row_levels * (stop - start)) + _levels(_rle_run(count, 2, 2)) + b"\x02" + values)
        chunk.page(_DATA_PAGE, body, _data_page_header(count, _RLE_DICTIONARY), count)
    return chunk


_STRING, _I8, _I32, _I64 = "string", 8, 32, 64
_COLUMN_KINDS: dict[str, object] = {
    "flow_id": _STRING, "label": _STRING, "macro": _STRING, "packet_index": _I32, "timestamp": _I64,
    "direction": _I8, "wire_length": _I32, "source": _STRING, "frame": _I64,
}


@lru_cache(maxsize=16)
def _schema_elements(width: int) -> list[bytes]:
    int8 = _struct((10, "struct", _struct((1, "byte", 8), (2, "bool", True))))
    elements = [_struct((3, "i32", _REQUIRED), (4, "bin", "schema"), (5, "i32", len(_COLUMN_KINDS) + 1))]
    for name, kind in _COLUMN_KINDS.items():
        if kind == _STRING:
            elements.append(_struct((1, "i32", _BYTE_ARRAY), (3, "i32", _OPTIONAL), (4, "bin", name),
                                    (6, "i32", _UTF8), (10, "struct", _struct((1, "struct", _struct())))))
        elif kind == _I8:
            elements.append(_struct((1, "i32", _INT32), (3, "i32", _OPTIONAL), (4, "bin", name),
                                    (6, "i32", _INT_8), (10, "struct", int8)))
        else:
            elements.append(_struct((1, "i32", _INT64 if kind == _I64 else _INT32), (3, "i32", _OPTIONAL),
                                    (4, "bin", name)))
    elements += [
        _struct((3, "i32", _OPTIONAL), (4, "bin", "nprint"), (5, "i32", 1), (6, "i32", _LIST),
                (10, "struct", _struct((3, "struct", _struct())))),
        _struct((3, "i32", _REPEATED), (4, "bin", "list"), (5, "i32", 1)),
        _struct((1, "i32", _INT32), (3, "i32", _REQUIRED), (4, "bin", "element"), (6, "i32", _INT_8),
                (10, "struct", int8)),
    ]
    return elements


@lru_cache(maxsize=16)
def _arrow_schema_key(width: int) -> bytes:
    """The ``ARROW:schema`` value pyarrow writes for the dataset schema (taken from pyarrow itself,
    so readers restore exactly the types pyarrow would)."""
    from netdiffusion.dataset import schema

    buf = io.BytesIO()
    pq.write_table(schema(width).empty_table(), buf)
    return pq.read_metadata(io.BytesIO(buf.getvalue())).metadata[b"ARROW:schema"]


def shard_bytes(columns: dict[str, np.ndarray | DictionaryColumn], matrix: np.ndarray | None = None, *,
                ternary: np.ndarray | None = None, width: int | None = None) -> list[bytes] | None:
    """The pieces of one Parquet shard file (concatenate or write them in order), or ``None`` when
    the shard needs pyarrow's general writer (no rows, a null string, a value outside -1/0/1).
    String columns may be given as :class:`DictionaryColumn`.

    ``nprint`` comes as int8 rows (``matrix``) or, from the encoder, as ``(rows, width // 4)``
    packed ternary rows (``ternary``, ``width`` a multiple of 8): then no int8 row is ever built."""
    if ternary is not None:
        if width is None or width % 8 or ternary.shape[1:] != (width // 4,):
            raise ValueError("ternary rows need a width that is a multiple of 8 and width // 4 bytes per row")
        rows = len(ternary)
    else:
        if matrix is None:
            raise ValueError("give matrix or ternary")
        rows, width = matrix.shape
        if not _ternary_rows_ok(matrix):
            return None
        matrix = np.ascontiguousarray(matrix, dtype=np.int8)
    if rows == 0 or width == 0:
        return None
    chunks: list[_Chunk] = []
    for name, kind in _COLUMN_KINDS.items():
        values = columns[name]
        if len(values) != rows:
            raise ValueError(f"column {name} has {len(values)} rows, nprint has {rows}")
        if kind == _STRING:
            chunk = _string_chunk(name, values)
            if chunk is None:
                return None
        else:
            chunk = _int_chunk(name, values, 64 if kind == _I64 else 32)
        chunks.append(chunk)
    chunks.append(_nprint_chunk(matrix, ternary, width))

    pieces = [MAGIC]
    offset = len(MAGIC)
    for chunk in chunks:
        chunk.start = offset
        first = len(chunk.pages[0]) + len(chunk.pages[1])
        if chunk.encodings[-1] == _RLE_DICTIONARY:
            chunk.dictionary_offset, chunk.data_offset = offset, offset + first
        else:
            chunk.data_offset = offset
        pieces += chunk.pages
        offset += chunk.size()
    total_compressed = offset - len(MAGIC)
    row_group = _struct((1, "list:struct", [c.meta() for c in chunks]),
                        (2, "i64", sum(c.uncompressed for c in chunks)), (3, "i64", rows),
                        (5, "i64", len(MAGIC)), (6, "i64", total_compressed))
    type_order = _struct((1, "struct", _struct()))
    footer = _struct((1, "i32", 2), (2, "list:struct", _schema_elements(width)), (3, "i64", rows),
                     (4, "list:struct", [row_group]),
                     (5, "list:struct", [_struct((1, "bin", b"ARROW:schema"), (2, "bin", _arrow_schema_key(width)))]),
                     (6, "bin", CREATED_BY), (7, "list:struct", [type_order] * len(chunks)))
    pieces += [footer, struct.pack("<I", len(footer)), MAGIC]
    return pieces


# -- reading ---------------------------------------------------------------------------------------

def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _read_value(buf: bytes, pos: int, type_id: int) -> tuple[object, int]:
    if type_id in (_T_TRUE, _T_FALSE):  # a bool element of a list: one byte
        return buf[pos] == _T_TRUE, pos + 1
    if type_id == _T_BYTE:
        return struct.unpack_from("b", buf, pos)[0], pos + 1
    if type_id in (4, _T_I32, _T_I64):  # i16, i32, i64: zigzag varints
        raw, pos = _read_varint(buf, pos)
        return (raw >> 1) ^ -(raw & 1), pos
    if type_id == 7:  # double
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if type_id == _T_BINARY:
        size, pos = _read_varint(buf, pos)
        return bytes(buf[pos:pos + size]), pos + size
    if type_id in (_T_LIST, 10):  # list, set
        head = buf[pos]
        pos += 1
        size, elem = head >> 4, head & 0x0F
        if size == 15:
            size, pos = _read_varint(buf, pos)
        items = []
        for _ in range(size):
            item, pos = _read_value(buf, pos, elem)
            items.append(item)
        return items, pos
    if type_id == 11:  # map
        size, pos = _read_varint(buf, pos)
        if not size:
            return {}, pos
        kinds = buf[pos]
        pos += 1
        out = {}
        for _ in range(size):
            key, pos = _read_value(buf, pos, kinds >> 4)
            out[key], pos = _read_value(buf, pos, kinds & 0x0F)  # type: ignore[index]
        return out, pos
    if type_id == _T_STRUCT:
        return _read_struct(buf, pos)
    raise ValueError(f"thrift type {type_id}")


def _read_struct(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    """One Thrift compact struct as ``{field id: value}`` (nested structs as dicts)."""
    out: dict[int, object] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return out, pos
        delta, type_id = head >> 4, head & 0x0F
        if delta:
            fid = last + delta
        else:
            raw, pos = _read_varint(buf, pos)
            fid = (raw >> 1) ^ -(raw & 1)
        if type_id in (_T_TRUE, _T_FALSE):
            out[fid] = type_id == _T_TRUE
        else:
            out[fid], pos = _read_value(buf, pos, type_id)
        last = fid


# packed byte -> its four int8 values (code 0/1/2 -> 0/1/-1; code 3 never written)
_CODES_TO_INT8 = np.array([[TERNARY_DICTIONARY[(b >> (2 * k)) & 3] if (b >> (2 * k)) & 3 < 3 else 0
                            for k in range(4)] for b in range(256)], dtype=np.int8).view("<u4").reshape(-1)


def read_nprint(data: bytes) -> np.ndarray | None:
    """The ``nprint`` rows (int8, ``(rows, width)``) of a shard written by :func:`shard_bytes`
    (``data``: the file's bytes), read from its pages directly; ``None`` for any file this writer
    did not write (or whose layout is not exactly what it writes): the caller then uses pyarrow."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        return None
    (size,) = struct.unpack_from("<I", data, len(data) - 8)
    if size + 12 > len(data):
        return None
    try:
        return _read_nprint(data, len(data) - 8 - size)
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, struct.error, pa.ArrowException):
        return None  # not a file this writer wrote, or a damaged one: pyarrow decides (and reports)


def _read_nprint(data: bytes, footer: int) -> np.ndarray | None:
    meta, _ = _read_struct(data, footer)
    if meta.get(6) != CREATED_BY:
        return None
    rows = int(meta.get(3, 0))  # type: ignore[arg-type]
    chunks = [next((c[3] for c in group[1] if c[3][3] == [b"nprint", b"list", b"element"]), None)
              for group in meta.get(4, [])]  # type: ignore[attr-defined]
    if not rows or any(c is None for c in chunks):
        return None
    values = sum(int(c[5]) for c in chunks)  # type: ignore[index]
    if values % rows:
        return None
    out = np.empty((rows, values // rows), dtype=np.int8)
    flat = out.reshape(-1)
    filled = 0
    codec = _zstd()
    for chunk in chunks:
        if chunk.get(4) not in (_ZSTD, _UNCOMPRESSED):  # type: ignore[union-attr]
            return None
        pos, end = int(chunk[11]), int(chunk[11]) + int(chunk[7])
        while pos < end:
            header, pos = _read_struct(data, pos)
            body = data[pos:pos + header[3]]
            pos += header[3]
            if chunk[4] == _ZSTD:
                body = codec.decompress(body, decompressed_size=header[2], asbytes=True)
            if header[1] == _DICTIONARY_PAGE:
                if np.frombuffer(body, dtype="<i4").tolist() != list(TERNARY_DICTIONARY):
                    return None
                continue
            count = header[5][1]
            at = 0
            for _ in range(2):  # repetition, then definition levels: skipped (every row is whole)
                (length,) = struct.unpack_from("<I", body, at)
                at += 4 + length
            if body[at] != 2:  # bit width of the dictionary indices
                return None
            run, at = _read_varint(body, at + 1)
            if not run & 1 or (run >> 1) * 8 < count or filled + count > flat.size:
                return None  # not one bit-packed run: not this writer's page
            packed = np.frombuffer(body, dtype=np.uint8, count=-(-count // 4), offset=at)
            values = _CODES_TO_INT8[packed].view(np.int8)
            flat[filled:filled + count] = values[:count]
            filled += count
    return out if filled == flat.size else None
