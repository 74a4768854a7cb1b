"""nPrint's CSV format: export datasets to it and import it (incl. the original NetDiffusion files).

nPrint writes one row per packet: a first column identifying the packet (``src_ip`` by default),
then one column per header bit named as in :mod:`netdiffusion.fields`, holding 1 / 0 / -1.
NetDiffusion's generated files carry a pandas index as the first column instead (empty name);
files may hold only some headers and may omit columns (NetDiffusion's generated files drop the
address bits); omitted bits import as absent (-1). Import accepts all of these.

Export writes one file per flow, ``<output>/<label>/<flow_id>.nprint``, with ``src_ip`` first and
nPrint's ``tv_sec`` / ``tv_usec`` after it (as nPrint writes them with absolute timestamps on; here
the time since the flow's first packet, to the microsecond). Import turns each file into one flow sample (or, with ``flow_size``, consecutive
chunks of that many rows); direction comes from ``src_ip`` (or the IP source field) against the
first row's, timestamps are 0 unless the file has nPrint's ``tv_sec`` / ``tv_usec`` columns.
Export also writes ``<output>/labels.json`` (each file's label and macro): a label that is not
file-safe (``tls web``) lives in the folder ``tls_web-<hash>/``, and nPrint's CSV has no column for
either, so import reads them back from that record.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from netdiffusion.dataset import (
    SUMMARY_FILE,
    Packets,
    dataset_layout,
    read_shard_or_skip,
    readable_shard_paths,
    write_fields,
    write_json,
    write_shard,
)
from netdiffusion.fields import ABSENT, DEFAULT_HEADERS, HEADERS, Layout
from netdiffusion.names import file_name

log = logging.getLogger(__name__)

ETHERNET_HEADER = 14
# ``netflix_01``, ``netflix_5_generated``: the number ends the name or a ``_`` part; an exported
# ``<label>/quic_0RTT-<hash>-000000.nprint`` or ``zoom_2-<hash>-...`` keeps its folder's label
_LABEL_PREFIX = re.compile(r"^(?P<label>[A-Za-z][A-Za-z0-9-]*?)_\d+(?=_|$)")
_EXTRA_COLUMNS = ("src_ip", "tv_sec", "tv_usec", "rts")
# nPrint's other headers (-e ethernet, -w wlan, -r radiotap, -p payload): no field table of ours
# holds them, so their columns are read past and counted in the import summary, not refused
OTHER_NPRINT_HEADERS = ("eth", "wlan", "radiotap", "payload")
# written by export next to the label folders: "<folder>/<file>.nprint" -> {"label", "macro"}
LABELS_FILE = "labels.json"


class NprintFormatError(ValueError):
    """A CSV that is not nPrint's format; the message is a one-line reason."""


def source_addresses(layout: Layout, matrix: np.ndarray) -> list[str]:
    """Textual IP source address per row (IPv4 if present, else IPv6, else ``""``)."""
    out = [""] * matrix.shape[0]
    for header in ("ipv6", "ipv4"):  # IPv4 wins when both are present
        if header not in layout.headers:
            continue
        present = np.flatnonzero(layout.header_present(matrix, header))
        if not len(present):
            continue
        bits = np.clip(matrix[present][:, layout.field_slice(f"{header}_src")], 0, 1).astype(np.uint8)
        raw = np.packbits(bits, axis=1)
        for row, addr in zip(present.tolist(), raw, strict=True):
            out[row] = str(ipaddress.ip_address(addr.tobytes()))
    return out


def write_csv(path: str | os.PathLike, layout: Layout, matrix: np.ndarray, first_column: Sequence[str],
              first_name: str = "src_ip", timestamps: np.ndarray | None = None) -> None:
    """Write rows in nPrint's CSV format (atomically); with ``timestamps`` (ns) also nPrint's
    ``tv_sec`` / ``tv_usec`` columns after the first, so a round trip keeps the inter-arrival times."""
    from netdiffusion.dataset import atomic_write_bytes

    times = [] if timestamps is None else ["tv_sec", "tv_usec"]
    header = ",".join([first_name, *times, *layout.columns])
    # int8 -> text in one vectorized pass: a lookup per value, rows joined once
    text = np.array(["-1", "0", "1"])[np.asarray(matrix, dtype=np.int64) + 1]
    if timestamps is None:
        firsts = list(first_column)
    else:
        ts = np.asarray(timestamps, dtype=np.int64)
        firsts = [f"{ip},{sec},{usec}" for ip, sec, usec in
                  zip(first_column, (ts // 1_000_000_000).tolist(), (ts % 1_000_000_000 // 1000).tolist(), strict=True)]
    lines = [header]
    for first, row in zip(firsts, text, strict=True):
        lines.append(first + "," + ",".join(row.tolist()))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


def export_dataset(input: str | os.PathLike, output: str | os.PathLike, timestamps: bool = True) -> dict:
    """Write every flow of a dataset as ``<output>/<label>/<flow_id>.nprint``.

    ``timestamps=False`` writes ``src_ip`` and the bit columns only, as the original NetDiffusion
    code reads them (its image conversion drops ``src_ip`` by name and takes every other column
    for a bit)."""
    started = time.perf_counter()
    src, out = Path(input), Path(output)
    layout = dataset_layout(src)
    flows = rows = 0
    per_label: Counter[str] = Counter()
    pending: dict[str, list[Packets]] = {}
    skipped: list[dict] = []  # damaged shards: named, counted, the other shards' flows still exported
    for path in readable_shard_paths(src, skipped):
        shard = read_shard_or_skip(path, skipped)
        if shard is None:
            continue
        for flow_id, flow in shard.flows():
            pending.setdefault(flow_id, []).append(flow)
    records: dict[str, dict[str, str]] = {}
    for flow_id, parts in pending.items():
        flow = Packets.concat(parts) if len(parts) > 1 else parts[0]
        flow = flow.take(np.argsort(flow.packet_index, kind="stable"))
        label = str(flow.label[0])
        relative = f"{file_name(label or 'unlabelled')}/{file_name(flow_id)}.nprint"
        write_csv(out / relative, layout, flow.nprint,
                  source_addresses(layout, flow.nprint), timestamps=flow.timestamp if timestamps else None)
        records[relative] = {"label": label, "macro": str(flow.macro[0])}
        flows += 1
        rows += len(flow)
        per_label[label] += 1
    if records:  # the CSV has no label or macro column, and the folder name is not the label when unsafe
        write_json(out / LABELS_FILE, records)
    summary = {"flows": flows, "packets": rows, "flows_per_label": dict(sorted(per_label.items())),
               "skipped_shards": skipped, "output": str(out), "seconds": round(time.perf_counter() - started, 3)}
    return summary


@lru_cache(maxsize=64)
def _column_plan(first_line: str) -> tuple[Layout, tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(layout, bit column names, their positions in the layout, all names) of a header row."""
    names = tuple(c.strip() for c in first_line.split(","))
    bit_columns = tuple(c for c in names if c.split("_", 1)[0] in HEADERS)
    if not bit_columns:
        raise NprintFormatError("no nPrint columns in the header row")
    extras = [c for c in names if c not in bit_columns]
    unknown = [c for c in extras if c not in _EXTRA_COLUMNS and not (c == "" or c.startswith("Unnamed"))
               and c.split("_", 1)[0] not in OTHER_NPRINT_HEADERS]
    if unknown:
        raise NprintFormatError(f"unknown column(s) {unknown[:3]}")
    layout = Layout(dict.fromkeys(c.split("_", 1)[0] for c in bit_columns))
    position = {c: i for i, c in enumerate(layout.columns)}
    unknown_bits = [c for c in bit_columns if c not in position]
    if unknown_bits:
        raise NprintFormatError(f"unknown nPrint column(s) {unknown_bits[:3]}")
    positions = np.array([position[c] for c in bit_columns])
    if len(set(bit_columns)) != len(bit_columns) or (np.diff(positions) <= 0).any():
        raise NprintFormatError("nPrint columns duplicated or out of nPrint's order")
    return layout, bit_columns, positions, names


def _fast_values(raw: bytes, names: tuple[str, ...], width: int) -> tuple[list[list[bytes]], np.ndarray] | None:
    """Bit values of a file whose extra columns all come first (nPrint: ``src_ip``; our export:
    ``src_ip,tv_sec,tv_usec``; NetDiffusion: an index) and whose cells are exactly ``-1`` / ``0`` /
    ``1`` (what nPrint and NetDiffusion write), without a CSV parser: after ``-1`` -> ``2`` every
    cell is one byte, so the values are every other byte. Returns the extra columns' cells per
    column and the values; ``None`` if the file does not have that shape (the general parser then
    handles it: it took ~20 ms per 1,408-column file, 7 of every 10 ms of an import)."""
    extras = len(names) - width
    if extras < 0 or any(n.split("_", 1)[0] in HEADERS for n in names[:extras]):
        return None
    lines = raw.replace(b"\r", b"").split(b"\n")[1:]
    lines = [line for line in lines if line]
    if not lines:
        return [[] for _ in range(extras)], np.zeros((0, width), dtype=np.int8)
    cells: list[list[bytes]] = [[] for _ in range(extras)]
    rest = []
    for line in lines:
        head = line.split(b",", extras)
        if len(head) != extras + 1:
            return None
        for column, cell in zip(cells, head, strict=False):
            column.append(cell)
        rest.append(head[-1])
    blob = np.frombuffer(b",".join(rest).replace(b"-1", b"2"), dtype=np.uint8)
    if len(blob) != 2 * len(lines) * width - 1 or (blob[1::2] != ord(",")).any():
        return None
    digits = blob[::2] - ord("0")
    if (digits > 2).any():
        return None
    values = digits.astype(np.int8).reshape(len(lines), width)
    values[values == 2] = ABSENT
    return cells, values


def ignored_columns(path: str | os.PathLike) -> dict[str, int]:
    """Per nPrint header we do not model (:data:`OTHER_NPRINT_HEADERS`), how many of the file's
    columns it has: what :func:`read_csv` reads past."""
    with open(path, "rb") as fh:
        first_line = fh.readline().decode("utf-8", errors="replace")
    counts: Counter[str] = Counter(c.strip().split("_", 1)[0] for c in first_line.split(","))
    return {h: counts[h] for h in OTHER_NPRINT_HEADERS if counts[h]}


def read_csv(path: str | os.PathLike) -> tuple[Layout, np.ndarray, dict[str, np.ndarray]]:
    """Parse one nPrint CSV: (layout, int8 matrix, extra columns such as ``src_ip``); columns of
    nPrint headers we do not model (ethernet, wlan, radiotap, payload) are read past."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NprintFormatError(f"cannot read: {exc.strerror or exc}") from exc
    first_line = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip()
    if not first_line:
        raise NprintFormatError("empty file")
    layout, bit_columns, positions, names = _column_plan(first_line)
    fast = _fast_values(raw, names, len(bit_columns))
    if fast is not None:
        cells, present = fast
        if not len(present):
            raise NprintFormatError("no packet rows")
        extra = {name: np.array([c.decode("utf-8", errors="replace") for c in column], dtype=object)
                 for name, column in zip(names, cells, strict=False) if name in _EXTRA_COLUMNS}
    else:
        present, extra = _parse_general(path, names, bit_columns)
    # files may omit columns (NetDiffusion drops the address bits): those bits are absent
    matrix = layout.empty(present.shape[0])
    matrix[:, positions] = present
    return layout, matrix, extra


def _parse_general(path: Path, names: tuple[str, ...], bit_columns: tuple[str, ...]
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Any column order and number format (e.g. ``1.0``), through pyarrow's CSV reader."""
    # unique names for pyarrow (the index column has an empty name)
    col_names = [n if n else f"__index{i}" for i, n in enumerate(names)]
    bit_set = set(bit_columns)
    types = {n: (pa.float32() if n in bit_set else pa.string()) for n in col_names}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=col_names, skip_rows=1),
            convert_options=pacsv.ConvertOptions(column_types=types),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise NprintFormatError(f"unparseable CSV: {str(exc).splitlines()[0]}") from exc
    if table.num_rows == 0:
        raise NprintFormatError("no packet rows")
    values = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in bit_columns], axis=1)
    if np.isnan(values).any():
        raise NprintFormatError("empty cells in nPrint columns")
    present = values.astype(np.int8)
    if not np.isin(present, (ABSENT, 0, 1)).all() or not (present == values).all():
        raise NprintFormatError("values other than 1 / 0 / -1")
    extra = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names if n in _EXTRA_COLUMNS}
    return present, extra


def _label_of(path: Path) -> str:
    m = _LABEL_PREFIX.match(path.stem)
    return m.group("label") if m else path.resolve().parent.name


def _exported_labels(root: Path, cache: dict[Path, dict[str, dict]]) -> dict[str, dict]:
    """The ``labels.json`` an export wrote in ``root`` (relative file -> label, macro), else ``{}``.

    A damaged record is ignored with a warning: the folder names still give (file-safe) labels."""
    if root not in cache:
        cache[root] = {}
        record = root / LABELS_FILE
        if record.is_file():
            try:
                data = json.loads(record.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s: ignored (%s); labels come from the file and folder names", record, exc)
            else:
                if isinstance(data, dict):
                    cache[root] = {k: v for k, v in data.items() if isinstance(v, dict)}
    return cache[root]


def _wire_lengths(layout: Layout, matrix: np.ndarray) -> np.ndarray:
    """Ethernet frame length implied by the IP length fields (0 where there is no IP header)."""
    out = np.zeros(matrix.shape[0], dtype=np.int64)
    if "ipv6" in layout.headers:
        v6 = layout.field_values(matrix, "ipv6_len")
        out = np.where(v6 >= 0, v6 + 40 + ETHERNET_HEADER, out)
    if "ipv4" in layout.headers:
        v4 = layout.field_values(matrix, "ipv4_tl")
        out = np.where(v4 >= 0, v4 + ETHERNET_HEADER, out)
    return out


def _directions(layout: Layout, matrix: np.ndarray, src_ip: np.ndarray | None) -> np.ndarray:
    """0 where the packet's source endpoint is the first row's, else 1.

    The endpoint is the ``src_ip`` column (or the IP source bits) plus the TCP/UDP source port, so
    files without addresses (NetDiffusion drops them) still get directions from ports."""
    ips = np.asarray(src_ip if src_ip is not None else source_addresses(layout, matrix), dtype=object)
    port = np.full(matrix.shape[0], -1, dtype=np.int64)
    for key in ("udp_sport", "tcp_sprt"):  # TCP wins when both are present
        if key.split("_")[0] in layout.headers:
            values = layout.field_values(matrix, key)
            port = np.where(values >= 0, values, port)
    endpoint = np.array([f"{ip}|{p}" for ip, p in zip(ips.tolist(), port.tolist(), strict=True)], dtype=object)
    return (endpoint != endpoint[0]).astype(np.int8)


def to_layout(source: Layout, matrix: np.ndarray, target: Layout) -> np.ndarray:
    """Re-lay a matrix onto ``target``: shared headers copied, the others absent (-1)."""
    missing = [h for h in source.headers if h not in target.headers]
    if missing:
        raise NprintFormatError(f"header(s) {missing} not in the dataset layout {list(target.headers)}")
    if source.columns == target.columns:
        return matrix
    out = target.empty(matrix.shape[0])
    for h in source.headers:
        out[:, target.header_slice(h)] = matrix[:, source.header_slice(h)]
    return out


def import_files(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *, label: str | None = None,
                 macro: str | None = None, flow_size: int | None = None,
                 headers: Sequence[str] = DEFAULT_HEADERS) -> dict:
    """Import nPrint CSVs into a dataset (one shard per file); bad files are listed, not fatal.

    Every file is laid onto the dataset layout ``headers`` (headers a file lacks become absent, as
    for NetDiffusion's ipv4+tcp+udp+icmp files). Label: ``label``, else what the export's
    ``labels.json`` records for the file, else the file name's ``<label>_<NN>`` prefix, else the
    parent folder. Macro: ``macro``, else the export's record, else ``""``. Raises
    ``FileNotFoundError`` when the inputs name no file at all (folders without ``*.nprint`` /
    ``*.csv``); nothing is written then."""
    started = time.perf_counter()
    out = Path(output)
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".nprint", ".csv"))
                     if p.is_dir() else [p])
    if not files:  # nothing to import: say so instead of writing an empty dataset
        raise FileNotFoundError(f"no nPrint CSV files (*.nprint, *.csv) under {', '.join(map(str, inputs))}")
    layout = Layout(headers)
    rejected: list[dict] = []
    ignored: Counter[str] = Counter()  # files with columns of each header we read past
    flows: Counter[str] = Counter()
    rows = 0
    written = set()
    exported: dict[Path, dict[str, dict]] = {}
    for n, f in enumerate(files):
        try:
            file_layout, matrix, extra = read_csv(f)
            matrix = to_layout(file_layout, matrix, layout)
        except NprintFormatError as exc:
            log.error("%s: %s", f, exc)
            rejected.append({"file": str(f), "reason": str(exc)})
            continue
        ignored.update(ignored_columns(f).keys())
        record = _exported_labels(f.parent.parent, exported).get(f"{f.parent.name}/{f.name}", {})
        lab = label or str(record.get("label") or "") or _label_of(f)
        mac = macro if macro is not None else str(record.get("macro") or "")
        size = flow_size or matrix.shape[0]
        count = matrix.shape[0]
        chunk = np.arange(count) // size
        index = np.arange(count) - chunk * size
        stem = f"{file_name(f.stem)}-{n:04d}"
        flow_ids = np.array([f"{stem}-{c:06d}" for c in range(int(chunk.max()) + 1)], dtype=object)[chunk]
        directions = np.zeros(count, dtype=np.int8)
        src_ip = extra.get("src_ip")
        for c in np.unique(chunk):
            rows_c = chunk == c
            directions[rows_c] = _directions(layout, matrix[rows_c],
                                             None if src_ip is None else src_ip[rows_c])
        if "tv_sec" in extra:
            ts = extra["tv_sec"].astype(np.int64) * 1_000_000_000 + extra.get(
                "tv_usec", np.zeros(count)).astype(np.int64) * 1000
            starts = ts[chunk * size]
            timestamps = ts - starts
        else:
            timestamps = np.zeros(count, dtype=np.int64)
        packets = Packets(
            flow_id=flow_ids, label=np.full(count, lab, dtype=object), macro=np.full(count, mac, dtype=object),
            packet_index=index.astype(np.int32), timestamp=timestamps, direction=directions,
            wire_length=_wire_lengths(layout, matrix).astype(np.int32),
            source=np.full(count, str(f), dtype=object), frame=np.arange(1, count + 1, dtype=np.int64),
            nprint=matrix,
        )
        name = f"{stem}.parquet"
        write_shard(packets, out / name)
        written.add(name)
        flows[lab] += int(chunk.max()) + 1
        rows += count
    write_fields(out, layout)
    for stale in out.glob("*.parquet") if out.exists() else []:
        if stale.name not in written:
            stale.unlink()
    summary = {"files_read": len(files) - len(rejected), "files_rejected": rejected, "packets": rows,
               "flows": dict(sorted(flows.items())),
               "headers": list(layout.headers), "source_format": "nprint-csv"}
    if ignored:  # said, not silently dropped: these bits are in no dataset column
        summary["files_with_ignored_headers"] = dict(sorted(ignored.items()))
        log.warning("%s: columns of nPrint header(s) %s read past (no dataset column holds them)",
                    ", ".join(map(str, inputs)), ", ".join(f"{h} ({n} files)" for h, n in sorted(ignored.items())))
    write_json(out / SUMMARY_FILE, summary)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
