"""Protocol repair: generated (or real) nPrint flows -> protocol-valid pcaps + a repair report.

``repair_dataset`` reads a dataset label by label, repairs all flows of a label at once with the
vectorized rules in :mod:`netdiffusion.repair.engine`, writes one Ethernet pcap per flow (and
optionally one merged pcap per class), ``repair_report.json`` and, if asked, the repaired dataset.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from netdiffusion.dataset import (
    Packets,
    read_layout,
    read_packets,
    shard_paths,
    write_fields,
    write_json,
    write_shard,
)
from netdiffusion.repair.engine import RULES, RepairConfig, RepairResult, repair_matrix
from netdiffusion.repair.synth import L4_CKSUM, build_packets

__all__ = ["RULES", "RepairConfig", "RepairResult", "repair_dataset", "repair_matrix", "repair_packets"]

log = logging.getLogger(__name__)
REPORT_FILE = "repair_report.json"
MERGED_GAP_NS = 1_000_000_000  # flows in a merged class pcap follow each other with this gap


def repair_packets(layout, packets: Packets, cfg: RepairConfig, payload: str = "zero",
                   rng: np.random.Generator | None = None) -> dict:
    """Repair every flow in ``packets``; returns the repaired rows, packet bytes and accounting."""
    order = np.lexsort((packets.packet_index, packets.flow_id))
    packets = packets.take(order)
    flow_ids, flow = np.unique(packets.flow_id, return_inverse=True)
    flow = flow.reshape(-1).astype(np.int64)
    result = repair_matrix(layout, packets.nprint, flow, packets.timestamp, cfg)
    kept = packets.take(np.flatnonzero(result.keep))
    m = result.matrix
    is_ = {h: np.zeros(len(m), dtype=bool) for h in layout.headers}
    # recover the stack from the repaired bits (every chosen header's fixed part is present now)
    for h in layout.headers:
        is_[h] = layout.header_present(m, h)
    before = {k: layout.field_values(m, k) for h, k in L4_CKSUM.items() if h in layout.headers}
    buf, starts, ends = build_packets(layout, m, is_, result.payload, payload, rng)
    for h, k in L4_CKSUM.items():
        if h in layout.headers:
            after = layout.field_values(m, k)
            rows = is_[h] & (after != before[k])
            if rows.any():
                old_bits = ((before[k][rows, None] >> np.arange(15, -1, -1)) & 1)
                new_bits = ((after[rows, None] >> np.arange(15, -1, -1)) & 1)
                result.bits["l4_checksum"][rows] += (old_bits != new_bits).sum(axis=1)
                mask = result.fields.setdefault(("l4_checksum", k), np.zeros(len(m), dtype=bool))
                mask |= rows
    repaired = Packets(flow_id=kept.flow_id, label=kept.label, macro=kept.macro,
                       packet_index=_positions(result.flow).astype(np.int32),
                       timestamp=result.timestamp, direction=result.direction.astype(np.int8),
                       wire_length=(ends - starts + 14).astype(np.int32), source=kept.source,
                       frame=kept.frame, nprint=m)
    return {"flow_ids": flow_ids, "result": result, "packets": repaired, "buffer": buf,
            "starts": starts, "ends": ends, "input_rows": np.bincount(flow, minlength=len(flow_ids))}


def _positions(flow: np.ndarray) -> np.ndarray:
    from netdiffusion.repair.groups import rank

    return rank(flow)


READ_ONCE_BYTES = 1 << 30  # datasets up to this many nPrint bytes are read once, not once per class


def _by_label(directory: Path, labels: list[str], width: int):
    """Yield ``(label, packets)``; one read for datasets that fit in memory, else one per class."""
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in shard_paths(directory))
    if rows * width > READ_ONCE_BYTES:
        for label in labels:
            yield label, read_packets(directory, labels=[label])
        return
    everything = read_packets(directory)
    order = np.argsort(everything.label, kind="stable")
    everything = everything.take(order)
    names = everything.label.astype(str)
    for label in labels:
        a, b = np.searchsorted(names, label, "left"), np.searchsorted(names, label, "right")
        yield label, everything.take(slice(a, b))


def _labels(directory: Path) -> list[str]:
    labels: set[str] = set()
    for p in shard_paths(directory):
        labels.update(pq.read_table(p, columns=["label"]).column("label").unique().to_pylist())
    return sorted(labels)


def repair_dataset(input: str | os.PathLike, output: str | os.PathLike, *,
                   dataset_output: str | os.PathLike | None = None, anonymize: bool = False,
                   payload: str = "zero", merged: bool = False, seed: int = 0, progress: bool | None = None,
                   **rules: object) -> dict:
    """Repair every flow of the dataset at ``input`` into ``output/<label>/<flow_id>.pcap``.

    ``rules`` override :class:`RepairConfig` fields (e.g. ``mtu=65535``, ``stack="packet"``).
    Writes ``output/repair_report.json`` and returns its totals."""
    from tqdm import tqdm

    from netdiffusion.decode import BASE_EPOCH_NS, _safe, flow_pcap_path
    from netdiffusion.pcap.writer import LINKTYPE_ETHERNET, pcap_bytes

    if payload not in ("zero", "random"):
        raise ValueError(f"payload must be 'zero' or 'random', not {payload!r}")
    started = time.perf_counter()
    src, out = Path(input), Path(output)
    layout = read_layout(src if src.is_dir() else src.parent)
    cfg = RepairConfig.from_rules(anonymize=anonymize, seed=seed, **rules)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    if dataset_output is not None:
        write_fields(dataset_output, layout)
    flows_report: list[dict] = []
    dropped: list[dict] = []
    totals_bits: Counter[str] = Counter()
    totals_fields: Counter[str] = Counter()
    n_packets = n_flows = n_in_packets = 0
    generated_ts = 0
    written_bytes = 0
    labels = _labels(src)
    for label, packets in tqdm(_by_label(src, labels, layout.width), total=len(labels), desc="repair",
                               unit="class", disable=None if progress is None else not progress):
        n_in_packets += len(packets)
        rep = repair_packets(layout, packets, cfg, payload, rng)
        res: RepairResult = rep["result"]
        fp = rep["packets"]
        flow_ids = rep["flow_ids"]
        nflows = len(flow_ids)
        counts = np.bincount(res.flow, minlength=nflows)
        bits_by_rule = {r: np.bincount(res.flow, weights=v, minlength=nflows).astype(np.int64)
                        for r, v in res.bits.items() if v.any()}
        fields_by = {f"{rule}:{key}": np.bincount(res.flow, weights=v, minlength=nflows).astype(np.int64)
                     for (rule, key), v in res.fields.items() if v.any()}
        raw = rep["buffer"]
        frames_all = _frames(raw, rep["starts"], rep["ends"], fp.direction)
        bounds = np.r_[0, np.cumsum(counts)]
        merged_parts: list[bytes] = []
        merged_ts: list[np.ndarray] = []
        offset_ns = 0
        for i, fid in enumerate(flow_ids.tolist()):
            if counts[i] == 0:
                dropped.append({"flow_id": fid, "label": label, "reason": "no rows with a network header",
                                "input_packets": int(rep["input_rows"][i])})
                continue
            a, b = bounds[i], bounds[i + 1]
            frames = frames_all[a:b]
            ts = BASE_EPOCH_NS + fp.timestamp[a:b]
            data = pcap_bytes(frames, ts, LINKTYPE_ETHERNET)
            from netdiffusion.dataset import atomic_write_bytes

            atomic_write_bytes(flow_pcap_path(out, label, fid), data)
            written_bytes += len(data)
            if merged:
                merged_parts.extend(frames)
                merged_ts.append(ts + offset_ns)
                offset_ns += int(fp.timestamp[b - 1]) + MERGED_GAP_NS
            entry = {"flow_id": fid, "label": label, "packets": int(counts[i]),
                     "padding_rows_dropped": int(rep["input_rows"][i] - counts[i]),
                     "bits_changed": {r: int(v[i]) for r, v in bits_by_rule.items() if v[i]},
                     "fields_changed": {k: int(v[i]) for k, v in fields_by.items() if v[i]},
                     "timestamps_generated": bool(res.timestamps_generated[i])}
            entry["bits_changed_total"] = sum(v for r, v in entry["bits_changed"].items() if r != "l4_checksum")
            flows_report.append(entry)
            n_flows += 1
            n_packets += int(counts[i])
            generated_ts += int(res.timestamps_generated[i])
        for r, v in bits_by_rule.items():
            totals_bits[r] += int(v.sum())
        for k, v in fields_by.items():
            totals_fields[k] += int(v.sum())
        if merged and merged_parts:
            atomic_write_bytes(out / _safe(label) / f"{_safe(label)}_merged.pcap",
                               pcap_bytes(merged_parts, np.concatenate(merged_ts), LINKTYPE_ETHERNET))
        if dataset_output is not None:
            write_shard(fp, Path(dataset_output) / f"{_safe(label)}.parquet")
    width_bits = n_packets * layout.width
    changed = sum(v for r, v in totals_bits.items() if r != "l4_checksum")
    totals = {"flows": n_flows, "packets": n_packets, "input_packets": n_in_packets,
              "flows_dropped": len(dropped), "bits_changed": dict(totals_bits),
              "bits_changed_total": changed,
              "bits_changed_share": round(changed / width_bits, 6) if width_bits else 0.0,
              "fields_changed": dict(sorted(totals_fields.items())),
              "flows_with_generated_timestamps": generated_ts,
              "config": {**cfg.__dict__, "payload": payload, "merged": merged},
              "seconds": round(time.perf_counter() - started, 3), "output": str(out)}
    write_json(out / REPORT_FILE, {"totals": totals, "dropped": dropped, "flows": flows_report})
    if dataset_output is not None:
        write_json(Path(dataset_output) / "summary.json", {"produced_by": "netdiffusion repair",
                                                           "input": str(src), **totals})
    if dropped:
        log.warning("%s: %d flow(s) dropped (see %s)", src, len(dropped), out / REPORT_FILE)
    return totals


def _frames(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, direction: np.ndarray) -> list[bytes]:
    from netdiffusion.pcap.writer import ethernet_frames

    raw = buf.tobytes()
    return ethernet_frames([raw[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)], direction)
