"""Protocol repair: generated (or real) nPrint flows -> protocol-valid pcaps + a repair report.

``repair_dataset`` reads a dataset label by label, repairs all flows of a label at once with the
vectorized rules in :mod:`netdiffusion.repair.engine`, writes one Ethernet pcap per flow (and
optionally one merged pcap per class), ``repair_report.json`` and, if asked, the repaired dataset.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow.parquet as pq

from netdiffusion.dataset import (
    PART_ROWS,
    SHARD_READ_ERRORS,
    Packets,
    concat_shards,
    dataset_layout,
    flow_values,
    read_shard_or_skip,
    readable_shard_paths,
    skip_shard,
    too_large_to_read_once,
    write_fields,
    write_json,
    write_shard,
)
from netdiffusion.jit import kernel
from netdiffusion.names import file_name
from netdiffusion.repair import groups as G
from netdiffusion.repair.engine import RULES, RepairConfig, RepairResult, repair_matrix
from netdiffusion.repair.synth import build_packets
from netdiffusion.validate import other_captures

__all__ = ["RULES", "RepairConfig", "RepairResult", "repair_dataset", "repair_matrix", "repair_packets"]

log = logging.getLogger(__name__)
REPORT_FILE = "repair_report.json"
MERGED_GAP_NS = 1_000_000_000  # flows in a merged class pcap follow each other with this gap
SNAPLEN = 262144  # pcap_bytes' default


PCAP_FILE_HEADER = 24  # bytes of a pcap file header
PCAP_RECORD = 16 + 14  # pcap record header + Ethernet header before each IP packet


def repair_packets(layout, packets: Packets, cfg: RepairConfig, payload: str = "zero",
                   rng: np.random.Generator | None = None, inplace: bool = False, first_flow: int = 0) -> dict:
    """Repair every flow in ``packets``; returns the repaired rows, packet bytes and accounting.

    ``buffer[starts[i]:ends[i]]`` is repaired packet ``i`` (IP header on). The buffer already
    has room for the pcap layout: a 24-byte file header before each flow's first packet and 30
    bytes (pcap record + Ethernet header) before every packet, which :func:`pcap_files` fills.
    ``inplace=True``: ``packets.nprint`` may be overwritten (saves a copy of every row).
    ``first_flow``: flows of the same class repaired by earlier calls (a class in parts)."""
    if not _is_sorted(packets.flow_id, packets.packet_index):  # repair_dataset's are: no sort of strings
        packets = packets.take(np.lexsort((packets.packet_index, packets.flow_id)))
        inplace = True  # the rows are our copy now
    # flow ids are sorted now: np.unique's values and inverse without sorting them again
    fid = packets.flow_id
    first = np.ones(len(fid), dtype=bool)
    first[1:] = fid[1:] != fid[:-1]
    flow_ids, flow = fid[first], np.cumsum(first) - 1
    result = repair_matrix(layout, packets.nprint, flow, packets.timestamp, cfg,
                           copy=not inplace, first_flow=first_flow)
    kept_rows = None if result.keep.all() else np.flatnonzero(result.keep)
    meta = {k: (getattr(packets, k) if kept_rows is None else getattr(packets, k)[kept_rows])
            for k in ("flow_id", "label", "macro", "source", "frame")}
    m = result.matrix
    # the stack repair chose: exactly the headers present in the repaired rows (every chosen
    # header's fixed part is complete, every other header blank; tested), without a pass over them
    is_ = result.headers
    gap = np.full(len(m), PCAP_RECORD, dtype=np.int64)
    gap[G.starts(result.flow)] += PCAP_FILE_HEADER
    buf, starts, ends, zero_from, cksum_changed = build_packets(
        layout, m, is_, result.payload, payload, rng, gap_before=gap, changed_bits=result.bits["l4_checksum"])
    for k, rows in cksum_changed.items():
        mask = result.fields.get(("l4_checksum", k))
        if mask is None:
            result.fields[("l4_checksum", k)] = rows
        else:
            mask |= rows
    repaired = Packets(**meta, packet_index=_positions(result.flow).astype(np.int32),
                       timestamp=result.timestamp, direction=result.direction.astype(np.int8),
                       wire_length=(ends - starts + 14).astype(np.int32), nprint=m)
    return {"flow_ids": flow_ids, "result": result, "packets": repaired, "buffer": buf,
            "starts": starts, "ends": ends, "zero_from": zero_from, "input_rows": np.bincount(flow, minlength=len(flow_ids))}


def _unique_path(path: str | os.PathLike, key: str, used: set[str]) -> str:
    """``path``, or when this run already wrote a file there (names that differ only in characters
    that are not file-safe, e.g. flows 'f 1' and 'f_1'), the same name with a hash of ``key``.

    Plain strings (``used`` holds ``os.fspath`` of every file written): one flow per file made
    building ``pathlib`` objects a tenth of repair's time."""
    path = os.fspath(path)
    if path in used:
        stem, suffix = os.path.splitext(path)
        path = f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:10]}{suffix}"
    used.add(path)
    return path


def _flow_sums(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Per flow, the sum of ``values`` over its rows ``bounds[i]:bounds[i + 1]`` (rows in flow order),
    as int64: a running sum read at the flow bounds (bincount with weights sums in float)."""
    running = np.empty(len(values) + 1, dtype=np.int64)
    running[0] = 0
    np.cumsum(values, out=running[1:])
    return running[bounds[1:]] - running[bounds[:-1]]


def _is_sorted(flow_id: np.ndarray, packet_index: np.ndarray) -> bool:
    """Rows already in ``np.lexsort((packet_index, flow_id))`` order (a stable sort: ties keep
    theirs), found in one comparison pass instead of sorting the flow id strings."""
    a, b = flow_id[:-1], flow_id[1:]
    return bool(((b > a) | ((b == a) & (packet_index[1:] >= packet_index[:-1]))).all())


def _is_identity(order: np.ndarray) -> bool:
    return bool(len(order) == 0 or (order[0] == 0 and (np.diff(order) == 1).all()))


@kernel
def _record_headers(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, ts: np.ndarray, direction: np.ndarray,
                    macs: np.ndarray) -> None:
    """The 30 bytes before each packet: its pcap record header (seconds, nanoseconds, captured and
    original length of the Ethernet frame, little-endian uint32) and Ethernet header (MACs by
    ``direction``: ``macs[0:12]`` or ``macs[12:24]``; EtherType IPv6 where the packet starts with
    version 6, else IPv4)."""
    last = buf.shape[0] - 1
    for i in range(starts.shape[0]):
        at = starts[i] - 30
        size = ends[i] - starts[i]
        fields = (ts[i] // 1_000_000_000, ts[i] % 1_000_000_000, size + 14, size + 14)
        for f in range(4):
            for k in range(4):
                buf[at + 4 * f + k] = (fields[f] >> (8 * k)) & 0xFF
        m = 12 if direction[i] else 0
        for k in range(12):
            buf[at + 16 + k] = macs[m + k]
        v6 = size > 0 and (buf[min(starts[i], last)] >> 4) == 6
        buf[at + 28] = 0x86 if v6 else 0x08
        buf[at + 29] = 0xDD if v6 else 0x00


def pcap_files(rep: dict, timestamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Fill the pcap file, record and Ethernet headers around the packets of ``repair_packets``.

    ``timestamps_ns``: absolute per packet. Returns ``(buffer, file_start, file_end)`` per flow
    index (flows without rows: start == end), the same bytes :func:`pcap_bytes` of
    :func:`ethernet_frames` writes, or ``None`` when a frame exceeds the snap length (the caller
    then uses those per-packet functions)."""
    from netdiffusion.pcap.writer import (
        LINKTYPE_ETHERNET,
        MAC_INITIATOR,
        MAC_RESPONDER,
        PCAP_MAGIC_NS,
    )

    buf, starts, ends = rep["buffer"], rep["starts"], rep["ends"]
    res = rep["result"]
    n = len(starts)
    sizes = ends - starts
    frame_len = sizes + 14
    if n and int(frame_len.max()) > SNAPLEN:
        return None
    ts = np.asarray(timestamps_ns, dtype=np.int64)
    if n and ts.min() < 0:
        raise ValueError("timestamps must be >= 0 ns since the epoch")
    macs = np.frombuffer(MAC_RESPONDER + MAC_INITIATOR + MAC_INITIATOR + MAC_RESPONDER, dtype=np.uint8)
    if n:  # direction 0: responder's MAC (destination), then the initiator's; direction 1 the reverse
        _record_headers(buf, np.ascontiguousarray(starts, dtype=np.int64), np.ascontiguousarray(ends, dtype=np.int64),
                        np.ascontiguousarray(ts), np.ascontiguousarray(res.direction, dtype=np.int64), macs)
    nflows = len(rep["flow_ids"])
    counts = np.bincount(res.flow, minlength=nflows)
    bounds = np.r_[0, np.cumsum(counts)]
    has = counts > 0
    file_start = np.zeros(nflows, dtype=np.int64)
    file_end = np.zeros(nflows, dtype=np.int64)
    file_start[has] = starts[bounds[:-1][has]] - PCAP_RECORD - PCAP_FILE_HEADER
    file_end[has] = ends[bounds[1:][has] - 1]
    header = np.frombuffer(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET),
                           dtype=np.uint8)
    buf[file_start[has][:, None] + np.arange(PCAP_FILE_HEADER)[None, :]] = header
    return buf, file_start, file_end


HOLE_MIN = 8192  # zero runs at least this long are left as holes in the pcap files


def file_extents(files: tuple[np.ndarray, np.ndarray, np.ndarray], ends: np.ndarray, zero_from: np.ndarray,
                 flow: np.ndarray) -> list[list[tuple[int, np.ndarray]]]:
    """Per flow index, the ``(offset in its file, buffer slice)`` pieces that hold its pcap's bytes.

    What lies between pieces (and after the last one, up to the file's size) is a packet's zero
    payload of at least :data:`HOLE_MIN` bytes, which :func:`atomic_write_extents` leaves as a
    hole. ``flow``: flow index per packet, non-decreasing (the buffer's order)."""
    buf, fstart, fend = files
    holes = np.flatnonzero(ends - zero_from >= HOLE_MIN)
    extents: list[list[tuple[int, np.ndarray]]] = [[(0, buf[a:b])] for a, b in zip(fstart.tolist(), fend.tolist(),
                                                                                  strict=True)]
    if not len(holes):
        return extents
    hole_flow = flow[holes]
    bounds = np.flatnonzero(np.r_[True, hole_flow[1:] != hole_flow[:-1], True])
    hole_start, hole_end = zero_from[holes].tolist(), ends[holes].tolist()
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        i = int(hole_flow[a])
        first, last, pieces = int(fstart[i]), int(fend[i]), []
        cursor = first
        for k in range(a, b):
            pieces.append((cursor - first, buf[cursor : hole_start[k]]))
            cursor = hole_end[k]
        if cursor < last:
            pieces.append((cursor - first, buf[cursor:last]))
        extents[i] = pieces
    return extents


def _positions(flow: np.ndarray) -> np.ndarray:
    from netdiffusion.repair.groups import rank

    return rank(flow)


def _read_shards(paths: list[Path], skipped: list[dict], labels: list[str] | None = None) -> Packets | None:
    """The rows of ``paths`` (optionally only ``labels``); a shard whose rows do not read (its
    footer did) is named, counted in ``skipped`` and left out. ``None`` when no shard read."""
    parts = [part for path in paths if (part := read_shard_or_skip(path, skipped, labels)) is not None]
    return concat_shards(parts) if parts else None


def _flow_cuts(flow_id: np.ndarray, part_rows: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``part_rows`` rows over rows grouped by flow, cut only between flows
    (a flow longer than ``part_rows`` is a range of its own)."""
    n = len(flow_id)
    if n <= part_rows:
        return [(0, n)]
    bounds = np.r_[np.flatnonzero(np.r_[True, flow_id[1:] != flow_id[:-1]]), n]
    cuts, a = [], 0
    while a < n:
        b = int(bounds[np.searchsorted(bounds, a + part_rows, "right") - 1])  # the last flow end within reach
        if b <= a:  # the flow at ``a`` is longer than a part: a part of its own
            b = int(bounds[np.searchsorted(bounds, a, "right")])
        cuts.append((a, b))
        a = b
    return cuts


def _readable(paths: list[Path], skipped: list[dict]) -> list[Path]:
    """``paths`` less the shards already skipped (their rows did not read for an earlier class)."""
    gone = {s["file"] for s in skipped}
    return [p for p in paths if str(p) not in gone]


def _flow_groups(paths: list[Path], label: str, part_rows: int,
                 skipped: list[dict]) -> tuple[dict[str, int], list[list[Path]]] | None:
    """For a class with more than ``part_rows`` rows: its flows' group numbers (groups of at most
    ``part_rows`` rows, flows taken in shard order so consecutive groups share at most a shard)
    and each group's shards; ``None`` when the class fits in one part. Reads only ``flow_id``."""
    counts: Counter[str] = Counter()
    shards_of: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        try:
            ids = pq.read_table(path, columns=["flow_id"], filters=[("label", "==", label)]).column("flow_id")
        except SHARD_READ_ERRORS as exc:
            skip_shard(path, exc, skipped)
            continue
        if not len(ids):
            continue
        flow_ids, n = np.unique(ids.to_numpy(zero_copy_only=False).astype(str), return_counts=True)
        for fid, c in zip(flow_ids.tolist(), n.tolist(), strict=True):
            counts[fid] += c
            shards_of.setdefault(fid, []).append(i)
    if sum(counts.values()) <= part_rows:
        return None
    group_of: dict[str, int] = {}
    shards: list[set[int]] = []
    rows = 0
    for fid in sorted(counts, key=lambda f: (shards_of[f][0], f)):
        if not shards or rows + counts[fid] > part_rows and rows:
            shards.append(set())
            rows = 0
        group_of[fid] = len(shards) - 1
        shards[-1].update(shards_of[fid])
        rows += counts[fid]
    return group_of, [[paths[i] for i in sorted(s)] for s in shards]


def _class_parts(paths: list[Path], labels: list[str], width: int, skipped: list[dict],
                 part_rows: int = PART_ROWS):
    """Yield ``(label, part, packets)``: each class's rows, sorted by flow and position, in parts
    of whole flows of at most ``part_rows`` rows (``part`` counts from 0; a class's parts one after
    another). Datasets that fit in memory are read once; others a class (or a part) at a time, so
    memory holds one part of one class, not the class."""
    if too_large_to_read_once(paths, width):
        for label in labels:
            plan = _flow_groups(_readable(paths, skipped), label, part_rows, skipped)
            if plan is None:
                whole = _read_shards(_readable(paths, skipped), skipped, [label])
                if whole is not None:
                    yield label, 0, whole
                continue
            group_of, group_shards = plan
            cached: dict[Path, tuple[Packets, np.ndarray] | None] = {}
            for k, paths_k in enumerate(group_shards):
                cached = {p: cached[p] for p in paths_k if p in cached}  # a shard two groups share is read once
                for p in paths_k:
                    if p not in cached:
                        shard = read_shard_or_skip(p, skipped, [label])
                        cached[p] = None if shard is None else (shard, flow_values(shard.flow_id, group_of, -1))
                pieces = []
                for entry in cached.values():
                    if entry is not None:
                        shard, groups = entry
                        here = groups == k
                        pieces.append(shard if here.all() else shard.take(np.flatnonzero(here)))
                if pieces:
                    yield label, k, concat_shards(pieces)
                del pieces
        return
    everything = _read_shards(paths, skipped)
    if everything is None:
        return
    # label, then the order repair_packets wants (so it need not copy the rows a second time)
    order = np.lexsort((everything.packet_index, everything.flow_id, everything.label))
    if not _is_identity(order):
        everything = everything.take(order)
    names = everything.label.astype(str)
    for label in labels:
        a, b = np.searchsorted(names, label, "left"), np.searchsorted(names, label, "right")
        cuts = _flow_cuts(everything.flow_id[a:b], part_rows)
        for k, (c0, c1) in enumerate(cuts):
            yield label, k, everything.take(slice(a + c0, a + c1))


def _labels(paths: list[Path], skipped: list[dict]) -> tuple[list[str], list[Path]]:
    """The classes of the shards ``paths`` and the shards whose labels read (others: ``skipped``)."""
    labels: set[str] = set()
    readable = []
    for p in paths:
        try:
            labels.update(pq.read_table(p, columns=["label"]).column("label").unique().to_pylist())
        except SHARD_READ_ERRORS as exc:
            skip_shard(p, exc, skipped)
            continue
        readable.append(p)
    return sorted(labels), readable


F = TypeVar("F", bound=Callable)


def _without_cyclic_gc(fn: F) -> F:
    """Run ``fn`` with Python's cyclic garbage collector paused (restored after, also on error).

    Why: repair allocates thousands of small containers per class (file pieces, report entries);
    in a process that holds many objects (numba, pyarrow, a caller's data) that made the collector
    walk every object of the process mid-run: measured 0.08 CPU-s of a 0.3 s repair. Repair
    creates no reference cycles, so reference counting frees everything as before."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return wrapper  # type: ignore[return-value]


@_without_cyclic_gc
def repair_dataset(input: str | os.PathLike, output: str | os.PathLike, *,
                   dataset_output: str | os.PathLike | None = None, anonymize: bool = False,
                   payload: str = "zero", merged: bool = False, seed: int = 0, progress: bool | None = None,
                   part_rows: int = PART_ROWS, **rules: object) -> dict:
    """Repair every flow of the dataset at ``input`` into ``output/<label>/<flow_id>.pcap``.

    ``rules`` override :class:`RepairConfig` fields (e.g. ``mtu=65535``, ``stack="packet"``).
    A class of more than ``part_rows`` rows is repaired that many rows (whole flows) at a time,
    so memory holds a part, not the class; its merged pcap and repaired dataset carry on across
    parts (``<class>.parquet``, then ``<class>-p0001.parquet``...). Writes
    ``output/repair_report.json`` and returns its totals."""
    if part_rows < 1:
        raise ValueError(f"part_rows must be at least 1, not {part_rows}")
    from tqdm import tqdm

    from netdiffusion.dataset import EncodedJSON, atomic_write_bytes, atomic_write_extents
    from netdiffusion.decode import BASE_EPOCH_NS
    from netdiffusion.pcap.writer import LINKTYPE_ETHERNET, pcap_bytes

    if payload not in ("zero", "random"):
        raise ValueError(f"payload must be 'zero' or 'random', not {payload!r}")
    started = time.perf_counter()
    src, out = Path(input), Path(output)
    layout = dataset_layout(src)
    if dataset_output is not None and Path(dataset_output).resolve() == (src if src.is_dir() else src.parent).resolve():
        raise ValueError(f"{dataset_output}: the repaired dataset cannot replace its input")
    earlier_shards = _earlier_shards(dataset_output) if dataset_output is not None else set()
    if not {"ipv4", "ipv6"} & set(layout.headers):
        raise ValueError(f"{src}: its layout ({', '.join(layout.headers)}) has no ipv4 or ipv6 header: "
                         "no packet can be built")
    cfg = RepairConfig.from_rules(anonymize=anonymize, seed=seed, **rules)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_files(out)  # a previous repair's pcaps here: removed below unless rewritten
    if dataset_output is not None:
        write_fields(dataset_output, layout)
    flows_report: list[EncodedJSON] = []  # one JSON line per flow, encoded as written (see EncodedJSON)
    dropped: list[dict] = []
    totals_bits: Counter[str] = Counter()
    totals_fields: Counter[str] = Counter()
    n_packets = n_flows = n_in_packets = merged_remapped = 0
    generated_ts = 0
    # a damaged shard is named and skipped (repair_report.json: skipped_shards); the others repaired
    skipped_shards: list[dict] = []
    labels, shards = _labels(readable_shard_paths(src, skipped_shards), skipped_shards)
    used: set[str] = set()  # files this run wrote (os.fspath): no flow, merged pcap or shard overwrites another
    out_str = os.fspath(out)
    # CPU seconds of this process by step (reported; file creation cost depends on the file system)
    cpu: Counter[str] = Counter()
    clock = time.process_time
    mark = clock()
    bar = tqdm(total=len(labels), desc="repair", unit="class", disable=None if progress is None else not progress)
    current: str | None = None  # the class being repaired (a large one comes in parts)
    class_flows = 0  # flows of the current class in its earlier parts
    merged_file: _MergedPcap | None = None
    try:
        for label, part, packets in _class_parts(shards, labels, layout.width, skipped_shards, part_rows):
            if label != current:
                if merged_file is not None:
                    merged_file.close()
                    merged_file = None
                if current is not None:
                    bar.update(1)
                current, class_flows = label, 0
                if merged:
                    merged_file = _MergedPcap(_unique_path(out / file_name(label) / f"{file_name(label)}_merged.pcap",
                                                           f"{label}/", used))
            if part:  # a large class: show how far into it repair is
                bar.set_postfix_str(f"{label}: part {part + 1}", refresh=True)
            cpu["read"] += clock() - mark
            mark = clock()
            n_in_packets += len(packets)
            rep = repair_packets(layout, packets, cfg, payload, rng, inplace=True,  # rows read for this call
                                 first_flow=class_flows)
            del packets
            res: RepairResult = rep["result"]
            fp = rep["packets"]
            flow_ids = rep["flow_ids"]
            nflows = len(flow_ids)
            counts = np.bincount(res.flow, minlength=nflows)
            bounds = np.r_[0, np.cumsum(counts)]
            bits_by_rule = {r: _flow_sums(v, bounds) for r, v in res.bits.items() if v.any()}
            fields_by = {f"{rule}:{key}": _flow_sums(v, bounds) for (rule, key), v in res.fields.items() if v.any()}
            abs_ts = BASE_EPOCH_NS + fp.timestamp
            now = clock()
            cpu["repair"] += now - mark
            mark = now
            files = pcap_files(rep, abs_ts)
            frames_all = _frames(rep["buffer"], rep["starts"], rep["ends"], fp.direction) if files is None else None
            extents = sizes = None
            if files is not None:
                extents = file_extents(files, rep["ends"], rep["zero_from"], res.flow)
                sizes = (files[2] - files[1]).tolist()
            # plain Python values for the per-flow loop (numpy scalar indexing costs ~10x more)
            count_list, input_rows = counts.tolist(), rep["input_rows"].tolist()
            generated_list = res.timestamps_generated.astype(bool).tolist()
            bits_lists = {r: v.tolist() for r, v in bits_by_rule.items()}
            fields_lists = {k: v.tolist() for k, v in fields_by.items()}
            write_seconds = 0.0
            class_dir = file_name(label or "unlabelled")  # as decode.flow_pcap_path names it
            for i, fid in enumerate(flow_ids.tolist()):
                if count_list[i] == 0:
                    dropped.append({"flow_id": fid, "label": label, "reason": "no rows with a network header",
                                    "input_packets": input_rows[i]})
                    continue
                a, b = bounds[i], bounds[i + 1]
                write_started = clock()
                path = _unique_path(os.path.join(out_str, class_dir, f"{file_name(fid)}.pcap"), f"{label}/{fid}", used)
                if files is None:
                    atomic_write_bytes(path, pcap_bytes(frames_all[a:b], abs_ts[a:b], LINKTYPE_ETHERNET))
                else:  # slices of the buffer (no copy); long zero payloads left as holes
                    atomic_write_extents(path, extents[i], sizes[i])
                write_seconds += clock() - write_started
                entry = {"flow_id": fid, "label": label, "file": f"{class_dir}/{os.path.basename(path)}", "packets": count_list[i],
                         "padding_rows_dropped": input_rows[i] - count_list[i],
                         "bits_changed": {r: v[i] for r, v in bits_lists.items() if v[i]},
                         "fields_changed": {k: v[i] for k, v in fields_lists.items() if v[i]},
                         "timestamps_generated": generated_list[i]}
                entry["bits_changed_total"] = sum(v for r, v in entry["bits_changed"].items() if r != "l4_checksum")
                flows_report.append(EncodedJSON(json.dumps(entry, default=str)))
                n_flows += 1
                n_packets += count_list[i]
                generated_ts += generated_list[i]
            now = clock()
            cpu["write_files"] += write_seconds
            cpu["pcap_layout_and_flow_reports"] += now - mark - write_seconds
            mark = now
            if merged_file is not None and len(fp):
                merged_remapped += merged_file.add(rep, files, extents, sizes, counts, bounds, abs_ts)
            for r, v in bits_by_rule.items():
                totals_bits[r] += int(v.sum())
            for k, v in fields_by.items():
                totals_fields[k] += int(v.sum())
            if dataset_output is not None:  # a class in parts: its first part keeps the class's name
                name = file_name(label) if part == 0 else f"{file_name(label)}-p{part:04d}"
                write_shard(fp, _unique_path(Path(dataset_output) / f"{name}.parquet",
                                             label if part == 0 else f"{label}#{part}", used))
            class_flows += nflows
            del rep, res, fp, files, extents, frames_all  # this part's buffers: freed before the next is read
            now = clock()
            cpu["merged_and_dataset_output"] += now - mark
            mark = now
        if merged_file is not None:
            merged_file.close()
            merged_file = None
        if current is not None:
            bar.update(1)
    finally:
        bar.close()
        if merged_file is not None:  # an error mid-class: no half-written merged pcap is left
            merged_file.abort()
    unread = {s["file"] for s in skipped_shards}
    if not n_in_packets and shards and all(str(p) in unread for p in shards):
        # footers read but no shard's rows did: an error, not an empty result that passes for one
        raise ValueError(f"{src}: none of its {len(shards)} shards could be read ({skipped_shards[0]['reason']})")
    width_bits = n_packets * layout.width
    changed = sum(v for r, v in totals_bits.items() if r != "l4_checksum")
    totals = {"flows": n_flows, "packets": n_packets, "input_packets": n_in_packets,
              "flows_dropped": len(dropped), "skipped_shards": skipped_shards, "bits_changed": dict(totals_bits),
              "bits_changed_total": changed,
              "bits_changed_share": round(changed / width_bits, 6) if width_bits else 0.0,
              "fields_changed": dict(sorted(totals_fields.items())),
              "flows_with_generated_timestamps": generated_ts,
              "config": {**cfg.__dict__, "payload": payload, "merged": merged},
              **({"merged_flows_with_new_initiator_port": merged_remapped} if merged else {}),
              "seconds": round(time.perf_counter() - started, 3),
              "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()}, "output": str(out)}
    write_json(out / REPORT_FILE, {"totals": totals, "dropped": dropped, "flows": flows_report},
               one_line_items="flows")
    # a re-run into the same folder must not leave the earlier run's flows (or classes) behind:
    # validate reads every capture there, the report only this run's
    for path in earlier:
        if os.fspath(path) in used:
            continue
        path.unlink(missing_ok=True)
        if path.parent.parent == out and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # a class this run did not write
    other_captures(out, used, "repair")
    if dataset_output is not None:
        for stale in earlier_shards:  # an earlier repair's classes: not this dataset
            if os.fspath(stale) not in used:
                stale.unlink(missing_ok=True)
        write_json(Path(dataset_output) / "summary.json", {"produced_by": "netdiffusion repair",
                                                           "input": str(src), **totals})
    if dropped:
        log.warning("%s: %d flow(s) dropped (see %s)", src, len(dropped), out / REPORT_FILE)
    return totals


class _MergedPcap:
    """One class's merged pcap (flows one after another, each :data:`MERGED_GAP_NS` after the
    previous flow's last packet, conversations kept distinct), added to part by part of the class
    and renamed into place when the class ends: the whole class is never in memory at once."""

    def __init__(self, path: str) -> None:
        from netdiffusion.dataset import AtomicFileInParts

        self.file = AtomicFileInParts(path)
        self.time_offset = 0  # ns added to the next flow's timestamps
        self.conversations = Conversations()

    def add(self, rep: dict, files: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
            extents: list | None, sizes: list[int] | None, counts: np.ndarray, bounds: np.ndarray,
            abs_ts: np.ndarray) -> int:
        """Append the flows of one part (their own files are written: the buffer is the merged
        file's copy from here on); returns how many flows got a new initiator port."""
        from netdiffusion.pcap.writer import LINKTYPE_ETHERNET, pcap_bytes

        res, fp = rep["result"], rep["packets"]
        remapped = distinct_conversations(rep["buffer"], rep["starts"], rep["ends"], res.flow,
                                          fp.direction, len(counts), self.conversations)
        last_ts = np.where(counts > 0, fp.timestamp[np.maximum(bounds[1:] - 1, 0)], 0)
        step = np.where(counts > 0, last_ts + MERGED_GAP_NS, 0)
        merged_ts = abs_ts + (np.cumsum(step) - step + self.time_offset)[res.flow]
        self.time_offset += int(step.sum())
        at = self.file.size
        if files is None:
            data = pcap_bytes(_frames(rep["buffer"], rep["starts"], rep["ends"], fp.direction), merged_ts,
                              LINKTYPE_ETHERNET)
            piece = memoryview(data)[PCAP_FILE_HEADER if at else 0 :]
            self.file.write([(at, piece)], at + len(piece))
            return remapped
        # patch the merged timestamps into the buffer itself and write the flows' extents one
        # after another (no copy of the packets)
        buf, fstart, _ = files
        stamp = np.empty((len(merged_ts), 2), dtype="<u4")
        stamp[:, 0] = merged_ts // 1_000_000_000
        stamp[:, 1] = merged_ts % 1_000_000_000
        buf[(rep["starts"] - PCAP_RECORD)[:, None] + np.arange(8)[None, :]] = stamp.view(np.uint8)
        keep = np.flatnonzero(counts > 0).tolist()
        pieces = []
        if not at:  # the file header, once
            pieces.append((0, buf[fstart[keep[0]] : fstart[keep[0]] + PCAP_FILE_HEADER]))
            at = PCAP_FILE_HEADER
        for i in keep:
            for offset, piece in extents[i]:
                if offset == 0:  # the flow's own file header is not repeated
                    piece, offset = piece[PCAP_FILE_HEADER:], PCAP_FILE_HEADER
                if len(piece):
                    pieces.append((at + offset - PCAP_FILE_HEADER, piece))
            at += sizes[i] - PCAP_FILE_HEADER
        self.file.write(pieces, at)
        return remapped

    def close(self) -> None:
        """Rename the file into place; a class without any packet gets no merged pcap."""
        if self.file.size:
            self.file.close()
        else:
            self.file.abort()

    def abort(self) -> None:
        self.file.abort()


MERGED_PORT_FIRST = 49152  # remapped initiator ports are taken from the dynamic range (RFC 6335)


def _conversation(proto: int, a: tuple[bytes, int], b: tuple[bytes, int]) -> tuple:
    """tshark's conversation key: no direction (a flow that starts from the other end is the same one)."""
    return (proto, *sorted((a, b)))


@dataclass
class Conversations:
    """The conversations a merged pcap already holds and the next initiator port to try: carried
    from one part of a class to the next, so flows of different parts stay distinct too."""

    seen: set[tuple] = field(default_factory=set)
    next_port: int = MERGED_PORT_FIRST


def distinct_conversations(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, flow: np.ndarray,
                           direction: np.ndarray, nflows: int, taken: Conversations | None = None) -> int:
    """Give every TCP/UDP flow whose conversation (addresses, protocol, both ports) an earlier flow
    of the same merged pcap already has a fresh initiator port, in ``buf`` in place; returns how
    many flows changed.

    Why: generated flows of one class often agree on their endpoints, and one after another in a
    merged pcap they read as one connection whose ports were reused (tshark's ``reused_ports``,
    out-of-order and lost segments). Each flow's own pcap keeps its ports; only the merged copy
    changes, with each packet's checksum updated incrementally (RFC 1624)."""
    n = len(starts)
    if not n:
        return 0
    starts = np.asarray(starts, dtype=np.int64)
    size = np.asarray(ends, dtype=np.int64) - starts
    last = len(buf) - 1
    at = lambda off: buf[np.minimum(starts + off, last)].astype(np.int64)  # noqa: E731
    version = at(0) >> 4
    v4, v6 = (version == 4) & (size >= 20), (version == 6) & (size >= 40)
    ihl = np.where(v4, (at(0) & 0xF) * 4, 40)
    proto = np.where(v4, at(9), at(6))
    first_fragment = ~v4 | ((((at(6) & 0x1F) << 8) | at(7)) == 0)
    l4 = starts + ihl
    header = np.where(proto == 6, 20, 8)
    ported = (v4 | v6) & ((proto == 6) | (proto == 17)) & first_fragment & (size >= ihl + header)
    rows = np.flatnonzero(ported)
    if not len(rows):
        return 0
    # each flow's conversation from its first packet with ports, seen from the initiator (direction 0)
    flows_of = flow[rows]
    firsts = rows[np.r_[True, flows_of[1:] != flows_of[:-1]]]
    taken = taken if taken is not None else Conversations()
    seen = taken.seen
    new_port: dict[int, tuple[int, int]] = {}  # flow -> (protocol, port)
    candidate = taken.next_port
    for r in firsts.tolist():
        a = int(starts[r])
        src, dst = ((a + 12, a + 16), (a + 16, a + 20)) if v4[r] else ((a + 8, a + 24), (a + 24, a + 40))
        ports = int(l4[r])
        sport, dport = int(buf[ports]) << 8 | int(buf[ports + 1]), int(buf[ports + 2]) << 8 | int(buf[ports + 3])
        hosts = (bytes(buf[src[0]:src[1]]), sport), (bytes(buf[dst[0]:dst[1]]), dport)
        initiator, responder = hosts if direction[r] == 0 else hosts[::-1]
        own = _conversation(int(proto[r]), initiator, responder)
        if own not in seen:
            seen.add(own)
            continue
        for _ in range(65536 - MERGED_PORT_FIRST):
            if _conversation(int(proto[r]), (initiator[0], candidate), responder) not in seen:
                break
            candidate = MERGED_PORT_FIRST + (candidate + 1 - MERGED_PORT_FIRST) % (65536 - MERGED_PORT_FIRST)
        else:
            continue  # every dynamic port of this conversation is taken: leave the flow as it is
        seen.add(_conversation(int(proto[r]), (initiator[0], candidate), responder))
        new_port[int(flow[r])] = (int(proto[r]), candidate)
    taken.next_port = candidate
    if not new_port:
        return 0
    targets = np.array(sorted(new_port), dtype=np.int64)
    port_of = np.zeros(nflows, dtype=np.int64)
    proto_of = np.full(nflows, -1, dtype=np.int64)
    port_of[targets] = [new_port[f][1] for f in targets.tolist()]
    proto_of[targets] = [new_port[f][0] for f in targets.tolist()]
    change = rows[proto_of[flows_of] == proto[rows]]
    field = l4[change] + np.where(direction[change] == 0, 0, 2)  # initiator's port: source or destination
    old = (buf[field].astype(np.int64) << 8) | buf[field + 1]
    new = port_of[flow[change]]
    buf[field], buf[field + 1] = (new >> 8).astype(np.uint8), (new & 0xFF).astype(np.uint8)
    ck = l4[change] + np.where(proto[change] == 6, 16, 6)
    stored = (buf[ck].astype(np.int64) << 8) | buf[ck + 1]
    total = (~stored & 0xFFFF) + (~old & 0xFFFF) + new
    for _ in range(2):
        total = (total & 0xFFFF) + (total >> 16)
    updated = ~total & 0xFFFF
    udp = proto[change] == 17
    updated = np.where(udp & (updated == 0), 0xFFFF, updated)  # UDP: 0 means "no checksum"
    updated = np.where(udp & (stored == 0), 0, updated)  # and a datagram without one keeps none
    buf[ck], buf[ck + 1] = (updated >> 8).astype(np.uint8), (updated & 0xFF).astype(np.uint8)
    return len(new_port)


def _earlier_shards(dataset_output: str | os.PathLike) -> set[Path]:
    """The shards of an earlier repair's ``dataset_output``, to be replaced. A folder holding
    Parquet files that a repair did not write (its ``summary.json`` says so) is refused: its files
    would mix into the repaired dataset, and they are not repair's to delete."""
    folder = Path(dataset_output)
    shards = set(folder.glob("*.parquet"))
    if not shards:
        return set()
    try:
        produced_by = json.loads((folder / "summary.json").read_text()).get("produced_by")
    except (OSError, ValueError, AttributeError):
        produced_by = None
    if produced_by != "netdiffusion repair":
        raise ValueError(f"{folder}: holds Parquet files that no earlier repair wrote; "
                         "--dataset-output needs an empty folder or an earlier repair's")
    return shards


def _earlier_files(out: Path) -> set[Path]:
    """The pcaps an earlier ``repair_dataset`` wrote into ``out``, as its report lists them
    (nothing else in the folder is touched)."""
    from netdiffusion.decode import flow_pcap_path

    try:
        report = json.loads((out / REPORT_FILE).read_text())
        flows = [f for f in report.get("flows") or [] if isinstance(f, dict) and "label" in f and "flow_id" in f]
        merged = bool(((report.get("totals") or {}).get("config") or {}).get("merged"))
    except (OSError, ValueError, AttributeError):
        return set()
    paths = {out / f["file"] if isinstance(f.get("file"), str) else flow_pcap_path(out, f["label"], f["flow_id"])
             for f in flows}
    if merged:
        paths |= {out / file_name(label) / f"{file_name(label)}_merged.pcap" for label in {f["label"] for f in flows}}
    resolved = out.resolve()
    return {p for p in paths if p.resolve().is_relative_to(resolved)}  # never outside the folder


def _frames(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, direction: np.ndarray) -> list[bytes]:
    from netdiffusion.pcap.writer import ethernet_frames

    raw = buf.tobytes()
    return ethernet_frames([raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)], direction)
