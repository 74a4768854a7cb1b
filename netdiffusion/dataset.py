"""The encoded dataset: sharded Parquet, one row per packet, plus ``fields.json``.

Every stage exchanges flows in this one format (the encoder writes it, the generator writes it
with generated bits, repair and evaluation read it), so this module is the contract:

=============  ==========================  ===================================================
column         type                        meaning
=============  ==========================  ===================================================
flow_id        string                      unique per flow sample within a dataset
label          string                      traffic class (e.g. ``netflix``)
macro          string                      macro service (e.g. ``streaming``), may be empty
packet_index   int32                       0-based position of the packet in its flow sample
timestamp      int64                       ns since the flow sample's first packet
direction      int8                        0 = sent by the flow's initiator, 1 = by the responder
wire_length    int32                       original frame length on the wire (IP packet + link)
source         string                      capture path as given, or the model that made it
frame          int64                       1-based frame number in that capture (0 = synthetic)
nprint         fixed_size_list<int8>[W]    the nPrint row, columns as in ``fields.json``
=============  ==========================  ===================================================

By default the Parquet file stores ``nprint`` as that list type, written (and read back) by
:mod:`netdiffusion.shard_parquet` as RLE levels plus 2-bit dictionary indices: standard Parquet
that any reader sees as the list type, ~10x cheaper than pyarrow's value-by-value list encoding.
``encode --nprint-storage binary`` stores the same bytes as ``fixed_size_binary(W)`` instead (for
readers that want raw bytes); every reader here returns the list type above for both.
``fields.json`` holds the ordered column names; ``summary.json`` what produced the dataset.
Shards are written atomically (temp file + rename), so readers never see half a shard.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from netdiffusion.fields import Layout, unpack_ternary
from netdiffusion.shard_parquet import DictionaryColumn, plain_columns, read_nprint, shard_bytes

log = logging.getLogger(__name__)

FIELDS_FILE = "fields.json"
SUMMARY_FILE = "summary.json"
# the longest flow whose timestamps (ns since its first packet) are taken as a clock: ten years.
# Beyond is a broken clock (fuzzed captures hold offsets of 9.2e18 ns); the pcap format's
# seconds (uint32) end in 2106, and written flows start in 2024
MAX_FLOW_SPAN_NS = 10 * 365 * 86_400 * 1_000_000_000


def clock_offsets(timestamp: np.ndarray, flow: np.ndarray, nflows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ns offset from its flow's first row, and per flow whether its clock is broken:
    a packet more than :data:`MAX_FLOW_SPAN_NS` before or after the first (fuzzed captures hold
    offsets of -6.8e18 and 9.2e18 ns; their differences wrapped around int64). ``flow``: each
    row's flow, 0..``nflows``-1, rows of a flow together, in order. Values beyond 2**62 (2116)
    either way are set aside before any difference is taken (their flow is broken), so none wraps;
    a broken flow's offsets mean nothing."""
    ts = np.asarray(timestamp, dtype=np.int64)
    absurd = (ts < -(1 << 62)) | (ts > 1 << 62)
    sane = np.where(absurd, 0, ts)
    first = np.ones(len(ts), dtype=bool)
    first[1:] = flow[1:] != flow[:-1]
    offset = sane - sane[first][np.cumsum(first) - 1] if len(ts) else sane  # |offset| < 2**63
    broken_row = absurd | (offset > MAX_FLOW_SPAN_NS) | (offset < -MAX_FLOW_SPAN_NS)
    return offset, np.bincount(flow, weights=broken_row, minlength=nflows) > 0

META_COLUMNS: tuple[str, ...] = (
    "flow_id", "label", "macro", "packet_index", "timestamp", "direction", "wire_length", "source", "frame",
)


def nprint_type(width: int) -> pa.DataType:
    """``fixed_size_list<element: int8 not null>[width]``: a non-nullable element halves Parquet's per-value
    level work (measured: write 97k -> 177k rows/s, read 142k -> 260k rows/s at 1,408 columns)."""
    return pa.list_(pa.field("element", pa.int8(), nullable=False), width)  # Parquet's own name


# pyarrow's options for the shards it writes (``binary`` storage, and the fallback for shards the
# fast writer does not take: empty, nulls, values outside -1/0/1): nprint values are 1/0/-1, so
# dictionary pages and min/max statistics buy nothing there. With ``storage="binary"``, ``nprint``
# is a FIXED_LEN_BYTE_ARRAY (``fixed_size_binary(W)``, each byte one int8 value);
# :func:`nprint_column` turns it back into ``fixed_size_list<int8>[W]`` without a copy.
PARQUET_WRITE_OPTIONS: dict = {
    "compression": "zstd",
    "use_dictionary": list(META_COLUMNS),
    "write_statistics": list(META_COLUMNS),
}
NPRINT_DISK_NOTE = {b"netdiffusion.nprint": b"fixed_size_binary(W): one int8 per byte (1/0/-1), "
                    b"columns as in fields.json; netdiffusion.dataset.read_table gives fixed_size_list<int8>[W]"}


def nprint_column(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """``nprint`` as ``fixed_size_list<int8>[W]`` whether stored as that or as ``fixed_size_binary(W)``
    (zero-copy: the binary column's data buffer is the int8 matrix)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not pa.types.is_fixed_size_binary(column.type):
        return pa.chunked_array(chunks, type=column.type)
    width = column.type.byte_width
    out = []
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError("nprint column has null rows")
        data = chunk.buffers()[1]
        flat = pa.Array.from_buffers(pa.int8(), len(chunk) * width, [None, data], offset=chunk.offset * width)
        out.append(pa.FixedSizeListArray.from_arrays(flat, type=nprint_type(width)))
    return pa.chunked_array(out, type=nprint_type(width))


def with_nprint_list(table: pa.Table) -> pa.Table:
    """A shard table with ``nprint`` as the contract's ``fixed_size_list<int8>[W]`` (see :func:`nprint_column`)."""
    if "nprint" not in table.column_names or not pa.types.is_fixed_size_binary(table.schema.field("nprint").type):
        return table
    i = table.column_names.index("nprint")
    col = nprint_column(table.column(i))
    return table.set_column(i, pa.field("nprint", col.type), col).replace_schema_metadata(None)


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None, filters: list | None = None) -> pa.Table:
    """``pq.read_table`` of one shard with ``nprint`` as ``fixed_size_list<int8>[W]``."""
    return with_nprint_list(pq.read_table(path, columns=list(columns) if columns else None, filters=filters))


def schema(width: int) -> pa.Schema:
    return pa.schema(
        [
            ("flow_id", pa.string()),
            ("label", pa.string()),
            ("macro", pa.string()),
            ("packet_index", pa.int32()),
            ("timestamp", pa.int64()),
            ("direction", pa.int8()),
            ("wire_length", pa.int32()),
            ("source", pa.string()),
            ("frame", pa.int64()),
            ("nprint", nprint_type(width)),
        ]
    )


@dataclass
class Packets:
    """A batch of packet rows held as numpy arrays (column-oriented, no per-packet objects)."""

    flow_id: np.ndarray
    label: np.ndarray
    macro: np.ndarray
    packet_index: np.ndarray
    timestamp: np.ndarray
    direction: np.ndarray
    wire_length: np.ndarray
    source: np.ndarray
    frame: np.ndarray
    nprint: np.ndarray  # (n, width) int8

    def __len__(self) -> int:
        return int(self.nprint.shape[0])

    def take(self, index: np.ndarray | slice) -> Packets:
        return Packets(**{k: getattr(self, k)[index] for k in (*META_COLUMNS, "nprint")})

    def to_table(self) -> pa.Table:
        n, width = self.nprint.shape
        flat = pa.array(np.ascontiguousarray(self.nprint, dtype=np.int8).reshape(-1), type=pa.int8())
        arrays = [
            pa.array(self.flow_id, pa.string()),
            pa.array(self.label, pa.string()),
            pa.array(self.macro, pa.string()),
            pa.array(self.packet_index, pa.int32()),
            pa.array(self.timestamp, pa.int64()),
            pa.array(self.direction, pa.int8()),
            pa.array(self.wire_length, pa.int32()),
            pa.array(self.source, pa.string()),
            pa.array(self.frame, pa.int64()),
            pa.FixedSizeListArray.from_arrays(flat, type=nprint_type(width)),
        ]
        return pa.Table.from_arrays(arrays, schema=schema(width))

    @classmethod
    def from_table(cls, table: pa.Table) -> Packets:
        col = nprint_column(table.column("nprint")).combine_chunks()
        width = col.type.list_size
        flat = col.flatten().to_numpy(zero_copy_only=False)
        # other writers may store any value (or another type): cast to int8 it would wrap (255 -> -1,
        # 0.7 -> 0) and every reader would take it for a bit; our own page reader sees only 1/0/-1
        bad = (flat != 1) & (flat != 0) & (flat != -1)
        if bad.any():
            at = int(np.argmax(bad))
            raise ValueError(f"nprint values must be 1 / 0 / -1: {int(bad.sum())} are not (the first, "
                             f"{flat[at].item()!r}, at row {at // width}, column {at % width})")
        matrix = flat.astype(np.int8, copy=False).reshape(-1, width)
        data = {k: table.column(k).to_numpy(zero_copy_only=False) for k in META_COLUMNS}
        return cls(**data, nprint=matrix)

    @classmethod
    def concat(cls, parts: Sequence[Packets]) -> Packets:
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in (*META_COLUMNS, "nprint")})

    def flows(self) -> Iterator[tuple[str, Packets]]:
        """Yield ``(flow_id, packets)`` per flow, packets in ``packet_index`` order."""
        order = np.lexsort((self.packet_index, self.flow_id))
        ids = self.flow_id[order]
        bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            yield str(ids[a]), self.take(order[a:b])


_TEMP_NAMES = itertools.count()


def _create_temp(path: str) -> tuple[int, str]:
    """A new hidden file beside ``path`` (``O_EXCL``: never someone else's), mode from the umask.

    Named by pid, a counter and random bits rather than through ``tempfile.mkstemp``: the
    encoder writes a shard, ``fields.json`` and ``summary.json`` per run, and mkstemp plus fchmod
    cost more than the shard's own write (measured ~0.3 ms per encode)."""
    folder, name = os.path.split(path)
    made = False
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{next(_TEMP_NAMES)}.{os.urandom(3).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
        except FileNotFoundError:  # the folder does not exist yet (checked only then: mkdir costs)
            if made:  # it does, and still no file can be made there (e.g. /proc): say so
                raise FileNotFoundError(errno.ENOENT, "cannot create a file in this folder", path) from None
            os.makedirs(folder or ".", exist_ok=True)
            made = True
        except OSError as exc:  # no permission, a read-only file system: named by the file asked for
            raise type(exc)(exc.errno, exc.strerror, path) from None
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def _atomic_temp(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(fd, temp path)`` beside ``path``; on success the temp file replaces ``path``.

    The file gets the usual umask-based mode (0666 & ~umask, as ``open`` would give it);
    ``fd`` is closed before the rename, and the temp file is removed on any error."""
    path = os.fspath(path)
    fd, tmp = _create_temp(path)
    try:
        try:
            yield fd, tmp
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one rename.

    Readers see the old file or the whole new one, never a part."""
    with _atomic_temp(path) as (_, tmp):
        yield Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Sequence[bytes]) -> None:
    """Write a file atomically (see :func:`atomic_path`); ``data``: any contiguous bytes-like object,
    or a sequence of them written in order (no joined copy).

    Written through the descriptor that created the temp file, not opened a second time by name:
    repair writes one file per flow, where those system calls were a large part of the time."""
    with _atomic_temp(path) as (fd, _):
        for piece in data if isinstance(data, (list, tuple)) else (data,):
            view = memoryview(piece).cast("B")
            while view:
                view = view[os.write(fd, view) :]


def atomic_write_extents(path: str | os.PathLike, extents: Sequence[tuple[int, object]], size: int) -> None:
    """Write a ``size``-byte file atomically from ``(offset, bytes-like)`` pieces in offset order.

    Bytes no piece covers read as zeros and, where the file system supports holes, take no disk
    space and are never copied: repair's pcaps with zero payloads are mostly zeros (64 KiB
    segments), and copying those zeros from untouched buffer pages was most of its system time."""
    with _atomic_temp(path) as (fd, _):
        _pwrite_extents(fd, extents)
        os.ftruncate(fd, int(size))


def _pwrite_extents(fd: int, extents: Sequence[tuple[int, object]]) -> None:
    for offset, piece in extents:
        view, at = memoryview(piece).cast("B"), int(offset)
        while view:
            done = os.pwrite(fd, view, at)
            view, at = view[done:], at + done


class AtomicFileInParts:
    """A file written in several calls (``(offset, bytes-like)`` pieces, as :func:`atomic_write_extents`)
    into a temp file beside ``path``: :meth:`close` renames it into place, :meth:`abort` removes it.

    Why: an output built from parts that are never all in memory at once (repair's merged pcap of
    a class repaired part by part) still appears whole or not at all."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._temp = _atomic_temp(path)
        self._fd, _ = self._temp.__enter__()
        self.size = 0  # the file's size so far (bytes no piece covered read as zeros)

    def write(self, extents: Sequence[tuple[int, object]], size: int) -> None:
        _pwrite_extents(self._fd, extents)
        self.size = max(self.size, int(size))

    def close(self) -> None:
        os.ftruncate(self._fd, self.size)
        self._temp.__exit__(None, None, None)

    def abort(self) -> None:
        error = RuntimeError("abandoned")
        try:
            self._temp.__exit__(RuntimeError, error, None)
        except RuntimeError as exc:
            if exc is not error:
                raise


class EncodedJSON(str):
    """An item of :func:`write_json`'s ``one_line_items`` list already encoded (``json.dumps``).

    Why: repair reports a dict per flow; kept as thousands of live dicts they made Python's cyclic
    garbage collector walk every object of the process several times per run (measured: 0.1 s
    of a 0.3 s repair). Encoded at once, each dict is freed at once; strings are never walked."""


def write_json(path: str | os.PathLike, obj: object, one_line_items: str | None = None) -> None:
    """Write ``obj`` as indented JSON; ``one_line_items``: a top-level key whose list is written
    one compact item per line, after the other keys (per-flow reports: still readable and diffable, and encoded by
    json's C encoder, which ``indent`` turns off: ~8x faster for a thousand flows)."""
    if one_line_items is None or not isinstance(obj, dict) or not obj.get(one_line_items):
        text = json.dumps(obj, indent=2, sort_keys=False, default=str)
    else:
        items = obj[one_line_items]
        rest = {k: v for k, v in obj.items() if k != one_line_items}
        head = json.dumps(rest, indent=2, sort_keys=False, default=str)[:-2]  # without "\n}"
        lines = ",\n    ".join(item if isinstance(item, EncodedJSON) else json.dumps(item, default=str)
                                for item in items)
        key = json.dumps(one_line_items)
        text = f"{head},\n  {key}: [\n    {lines}\n  ]\n}}" if rest else f"{{\n  {key}: [\n    {lines}\n  ]\n}}"
    atomic_write_bytes(path, (text + "\n").encode())


NPRINT_STORAGES = ("list", "binary")


def write_shard(packets: Packets, path: str | os.PathLike, storage: str = "list") -> None:
    """Write one Parquet shard atomically.

    ``storage="list"`` (default) stores ``nprint`` as the contract's ``fixed_size_list<int8>[W]``, so
    any Parquet reader (pyarrow, pandas, Spark, DuckDB) sees the bit rows as they are; written by
    :func:`netdiffusion.shard_parquet.shard_bytes` (pyarrow for what it does not take). ``"binary"``
    stores the same bytes as ``fixed_size_binary(W)``: plain readers see bytes; every reader in this
    module converts it back (see :func:`nprint_column`)."""
    if storage not in NPRINT_STORAGES:
        raise ValueError(f"nprint storage must be one of {NPRINT_STORAGES}, not {storage!r}")
    if storage == "list":
        pieces = shard_bytes({k: getattr(packets, k) for k in META_COLUMNS}, packets.nprint)
        if pieces is not None:  # the fast writer (see netdiffusion.shard_parquet); else pyarrow's
            atomic_write_bytes(path, pieces)
            return
    table = packets.to_table()
    metadata = None
    if storage == "binary":
        n, width = packets.nprint.shape
        rows = pa.py_buffer(np.ascontiguousarray(packets.nprint, dtype=np.int8))  # the matrix itself, no copy
        disk = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, rows])
        table = table.set_column(table.column_names.index("nprint"), pa.field("nprint", disk.type, nullable=False),
                                 disk)
        metadata = NPRINT_DISK_NOTE
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp, **PARQUET_WRITE_OPTIONS)


def write_ternary_shard(columns: dict[str, np.ndarray | DictionaryColumn], ternary: np.ndarray, width: int,
                        path: str | os.PathLike) -> None:
    """:func:`write_shard` (``list`` storage) for rows already in the packed ternary form
    (:func:`netdiffusion.fields.pack_ternary`, ``width // 4`` bytes per row): the encoder's path,
    where no int8 row is built at all. ``columns``: the :data:`META_COLUMNS` arrays (string ones
    may be :class:`~netdiffusion.shard_parquet.DictionaryColumn`)."""
    pieces = shard_bytes(columns, ternary=ternary, width=width)
    if pieces is None:  # pyarrow's writer needs the int8 rows
        nprint = unpack_ternary(ternary.reshape(-1), len(ternary) * width).reshape(len(ternary), width)
        write_shard(Packets(**plain_columns(columns), nprint=nprint), path)
        return
    atomic_write_bytes(path, pieces)


def write_fields(directory: str | os.PathLike, layout: Layout) -> None:
    atomic_write_bytes(Path(directory) / FIELDS_FILE, _fields_json(tuple(layout.columns)))


@lru_cache(maxsize=8)
def _fields_json(columns: tuple[str, ...]) -> bytes:
    """``fields.json``'s bytes (1,408 names: serialized once per process, not per dataset)."""
    return (json.dumps(list(columns), indent=2) + "\n").encode()


def read_layout(directory: str | os.PathLike) -> Layout:
    path = Path(directory) / FIELDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not an encoded dataset (no {FIELDS_FILE})")
    try:
        return Layout.from_columns(json.loads(path.read_text()))
    except (ValueError, TypeError, AttributeError) as exc:  # bad JSON, or not a list of nPrint columns
        raise ValueError(f"{path}: {exc}") from exc


def dataset_layout(path: str | os.PathLike) -> Layout:
    """The layout of the dataset at ``path``: a dataset directory or one shard file in it.

    A path that does not exist is "no such dataset" (not its parent folder's dataset)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset")
    layout = read_layout(path if path.is_dir() else path.parent)
    _check_shard_widths(path, layout)
    return layout


def _check_shard_widths(path: Path, layout: Layout) -> None:
    """Raise ``ValueError`` naming the shard whose ``nprint`` rows are not as wide as ``fields.json``.

    Reads only the shards' footers; a file that is not Parquet is left to the read, which names it."""
    fields = (path if path.is_dir() else path.parent) / FIELDS_FILE
    for shard in shard_paths(path):
        try:
            schema = pq.read_schema(shard)
        except (pa.ArrowException, OSError):
            continue
        if schema.get_field_index("nprint") < 0:
            raise ValueError(f"{shard}: no nprint column")
        kind = schema.field("nprint").type
        width = getattr(kind, "list_size", None) or getattr(kind, "byte_width", None)
        if width != layout.width:
            raise ValueError(f"{shard}: nPrint rows of {width} columns, but {fields} lists {layout.width}")


def shard_paths(directory: str | os.PathLike) -> list[Path]:
    """Parquet shards of a dataset directory (recursively, hidden temp files excluded)."""
    directory = Path(directory)
    if directory.is_file():
        return [directory]
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))


def read_shard(path: str | os.PathLike, labels: Sequence[str] | None = None) -> Packets:
    """One shard as :class:`Packets` (optionally only some labels).

    Shards this package wrote have their ``nprint`` rows decoded straight from the pages (~13x
    faster than pyarrow's list decoding, see :mod:`netdiffusion.shard_parquet`); other files
    (``binary`` storage, files from other writers) are read by pyarrow."""
    data = Path(path).read_bytes()  # read once: our page reader and pyarrow share the bytes
    matrix = read_nprint(data)
    if matrix is not None:
        try:
            table = pq.read_table(pa.BufferReader(data), columns=list(META_COLUMNS))
        except pa.ArrowException:
            pass  # damaged elsewhere: the read by path below reports it, naming the file
        else:
            packets = Packets(**{k: table.column(k).to_numpy(zero_copy_only=False) for k in META_COLUMNS},
                              nprint=matrix)
            return _of_labels(packets, labels) if labels else packets
    filters = [("label", "in", list(labels))] if labels else None
    table = pq.read_table(path, columns=[*META_COLUMNS, "nprint"], filters=filters)
    try:
        return Packets.from_table(table)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _of_labels(packets: Packets, labels: Sequence[str]) -> Packets:
    """The rows of ``labels``: the same arrays when every row is one of them (a shard of one class,
    as generate writes them), else a copy of those rows (compared per label: ``np.isin`` sorts the
    object array of every row)."""
    keep = np.zeros(len(packets), dtype=bool)
    for label in set(labels):
        keep |= packets.label == label
    return packets if keep.all() else packets.take(np.flatnonzero(keep))


def read_packets(directory: str | os.PathLike, labels: Sequence[str] | None = None) -> Packets:
    """Read a whole dataset (optionally only some labels) into memory."""
    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"{directory}: no Parquet shards")
    return concat_shards([read_shard(p, labels) for p in paths])


# datasets up to this many nPrint bytes (rows x columns, one byte each) are read whole; larger ones
# a class, a part or a shard at a time (repair, training's choice of flows)
READ_ONCE_BYTES = 1 << 30


def too_large_to_read_once(paths: Sequence[str | os.PathLike], width: int) -> bool:
    """Whether the shards' rows (counted from their footers) hold more than :data:`READ_ONCE_BYTES`
    nPrint bytes at ``width`` columns."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths) * width > READ_ONCE_BYTES


# rows of one class held at once where a class can be large: generate writes a class in shards of
# whole flows of about this many rows, repair repairs it this many rows at a time
PART_ROWS = 1 << 17


def flow_values(flow_id: np.ndarray, value_of: Mapping[str, int], default: int) -> np.ndarray:
    """Per row, ``value_of`` its flow id (``default`` for ids it lacks), looked up once per distinct
    flow rather than once per row."""
    ids, inverse = np.unique(flow_id.astype(str), return_inverse=True)
    return np.array([value_of.get(f, default) for f in ids.tolist()], dtype=np.int64)[inverse.reshape(-1)]


def only_flows(packets: Packets, flow_ids: set[str]) -> Packets:
    """The rows of ``flow_ids``: the same arrays when every row is one of them, else a copy."""
    keep = flow_values(packets.flow_id, dict.fromkeys(flow_ids, 1), 0).astype(bool)
    return packets if keep.all() else packets.take(np.flatnonzero(keep))


def concat_shards(parts: Sequence[Packets]) -> Packets:
    """Shards read one by one as one :class:`Packets` (empty ones left out unless all are);
    one shard: its fresh arrays, no copy. ``parts`` must not be empty."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    return parts[0] if len(parts) == 1 else Packets.concat(parts)


def iter_shards(directory: str | os.PathLike) -> Iterator[Packets]:
    """Stream a dataset shard by shard (bounded memory)."""
    for p in shard_paths(directory):
        yield read_shard(p)


# what reading a damaged shard raises (truncated, not Parquet, wrong schema)
SHARD_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, pa.ArrowException)


def skip_reason(shard: Path, exc: BaseException) -> str:
    """Why ``shard`` did not read, in one line, without its path (the caller names the file once)."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return reason.removeprefix(f"{shard}: ")


def skip_shard(shard: Path, exc: BaseException, skipped: list[dict]) -> None:
    """Log a shard that cannot be read with its path and reason, and list it in ``skipped``."""
    reason = skip_reason(shard, exc)
    log.error("%s: unreadable shard skipped (%s)", shard, reason)
    skipped.append({"file": str(shard), "reason": reason})


def read_shard_or_skip(shard: Path, skipped: list[dict], labels: Sequence[str] | None = None) -> Packets | None:
    """:func:`read_shard`, or ``None`` after :func:`skip_shard` when its rows do not read (its
    footer may: :func:`readable_shard_paths` reads only the footer and flow ids)."""
    try:
        return read_shard(shard, labels)
    except SHARD_READ_ERRORS as exc:
        skip_shard(shard, exc, skipped)
        return None


def readable_shard_paths(directory: str | os.PathLike, skipped: list[dict]) -> list[Path]:
    """The shards of a dataset whose footer and ``flow_id`` column read; the others go to ``skipped``.

    Per-flow conversions (decode, export-nprint) convert the rest of a dataset with one damaged shard
    instead of stopping at it. Raises ``FileNotFoundError`` without shards and ``ValueError`` when none
    reads, so an empty output never passes for a result."""
    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"{directory}: no Parquet shards")
    readable = []
    for shard in paths:
        try:
            pq.read_table(shard, columns=["flow_id"])
        except SHARD_READ_ERRORS as exc:
            skip_shard(shard, exc, skipped)
            continue
        readable.append(shard)
    if not readable:
        raise ValueError(f"{directory}: none of its {len(paths)} shards could be read")
    return readable


def split_dataset(directory: str | os.PathLike, train_output: str | os.PathLike,
                  holdout_output: str | os.PathLike, *, holdout: float = 0.2, seed: int = 0) -> dict:
    """Split a dataset by flow into a training part and a held-out part (per class, reproducible).

    Evaluation compares synthetic flows with *held-out* real flows, so the model must not see them.
    Every class with at least two flows keeps at least one flow on each side; a class with a single
    flow stays in training only. Streams shard by shard (only ``flow_id``/``label`` are read whole).
    Returns ``{"train": {label: flows}, "holdout": {label: flows}}``.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    tables = [pq.read_table(p, columns=["flow_id", "label"]) for p in shard_paths(directory)]
    if not tables:
        raise FileNotFoundError(f"{directory}: no Parquet shards")
    ids = np.concatenate([t.column("flow_id").to_numpy(zero_copy_only=False) for t in tables]).astype(str)
    labels = np.concatenate([t.column("label").to_numpy(zero_copy_only=False) for t in tables]).astype(str)
    flow_ids, first = np.unique(ids, return_index=True)
    flow_labels = labels[first]
    rng = np.random.default_rng(seed)
    held = np.zeros(len(flow_ids), dtype=bool)
    for label in np.unique(flow_labels):
        members = np.flatnonzero(flow_labels == label)
        if len(members) < 2:
            continue
        n = min(max(1, int(round(len(members) * holdout))), len(members) - 1)
        held[rng.choice(members, n, replace=False)] = True
    held_ids = flow_ids[held]
    layout = read_layout(directory)
    outputs = (Path(train_output), Path(holdout_output))
    for out in outputs:
        out.mkdir(parents=True, exist_ok=True)
        write_fields(out, layout)
    for i, shard in enumerate(iter_shards(directory)):
        in_holdout = np.isin(shard.flow_id.astype(str), held_ids)
        for out, mask in zip(outputs, (~in_holdout, in_holdout), strict=True):
            if mask.any():
                write_shard(shard.take(mask), out / f"part-{i:05d}.parquet")
    labels_train, counts_train = np.unique(flow_labels[~held], return_counts=True)
    labels_held, counts_held = np.unique(flow_labels[held], return_counts=True)
    return {"train": {str(k): int(v) for k, v in zip(labels_train, counts_train, strict=True)},
            "holdout": {str(k): int(v) for k, v in zip(labels_held, counts_held, strict=True)}}
