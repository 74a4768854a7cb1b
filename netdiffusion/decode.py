"""Decode an nPrint dataset back into pcaps: one Ethernet pcap per flow, from the bits alone.

Header bytes come straight from the nPrint rows (:func:`netdiffusion.packets.build_ip_packets`),
payloads are zero-filled to the length the IP header records, frames get fixed locally
administered MACs per direction, and timestamps are the flow-relative ``timestamp`` column added
to a fixed epoch (:data:`BASE_EPOCH_NS`), so decoding is deterministic. Used for round-trip tests
and to turn generated (already repaired) rows into captures. A flow none of whose rows has a
network header of the layout gets no file (an empty pcap would pass for a flow); such flows are
counted as ``flows_without_packets``.
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
    MAX_FLOW_SPAN_NS,
    Packets,
    dataset_layout,
    read_shard_or_skip,
    readable_shard_paths,
    write_json,
)
from netdiffusion.names import file_name
from netdiffusion.packets import build_ip_packets
from netdiffusion.pcap.writer import LINKTYPE_ETHERNET, ethernet_frames, write_pcap
from netdiffusion.validate import other_captures

log = logging.getLogger(__name__)

BASE_EPOCH_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z: decoded flows start here
SUMMARY_FILE = "decode_summary.json"


def flow_pcap_path(output: Path, label: str, flow_id: str) -> Path:
    """Where a flow's pcap goes: ``<output>/<label>/<flow_id>.pcap`` (names made file-safe)."""
    return output / file_name(label or "unlabelled") / f"{file_name(flow_id)}.pcap"


def write_flow(layout, flow: Packets, path: Path) -> int:
    """Write one flow's rows as an Ethernet pcap; returns the number of packets written.

    A flow with no row that has a network header (an IPv6 flow encoded with ``--headers
    ipv4,tcp``) writes no file and returns 0: an empty pcap would pass for a flow."""
    ip_packets = build_ip_packets(layout, flow.nprint)
    keep = np.fromiter((len(p) > 0 for p in ip_packets), dtype=bool, count=len(ip_packets))
    if not keep.any():
        return 0
    if not keep.all():
        ip_packets = [p for p, k in zip(ip_packets, keep, strict=True) if k]
    frames = ethernet_frames(ip_packets, flow.direction[keep])
    # a broken clock (fuzzed captures: offsets of -6.8e18 or 9.2e18 ns) is held to what a pcap can
    # say: from 1970 to ten years after 2024 (past that, BASE_EPOCH_NS + offset overflowed int64)
    ts = BASE_EPOCH_NS + np.clip(flow.timestamp[keep].astype(np.int64), -BASE_EPOCH_NS, MAX_FLOW_SPAN_NS)
    write_pcap(path, frames, ts, LINKTYPE_ETHERNET)
    return len(frames)


def decode_dataset(input: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Write ``<output>/<label>/<flow_id>.pcap`` for every flow of the dataset at ``input``."""
    from tqdm import tqdm

    started = time.perf_counter()
    src, out = Path(input), Path(output)
    layout = dataset_layout(src)
    skipped: list[dict] = []  # damaged shards: named, counted, the other shards' flows still decoded
    paths = readable_shard_paths(src, skipped)
    # flows split across shards (rare) are collected and written once complete
    seen: Counter[str] = Counter()
    for p in paths:
        ids = pq.read_table(p, columns=["flow_id"]).column("flow_id").unique().to_pylist()
        seen.update(ids)
    split = {f for f, c in seen.items() if c > 1}
    pending: dict[str, list[Packets]] = {}
    flows = packets = rows_without_ip = flows_without_packets = 0
    per_label: Counter[str] = Counter()
    written_paths: set[Path] = set()

    def emit(flow_id: str, flow: Packets) -> None:
        nonlocal flows, packets, rows_without_ip, flows_without_packets
        path = flow_pcap_path(out, str(flow.label[0]), flow_id)
        written = write_flow(layout, flow, path)
        rows_without_ip += len(flow) - written
        if not written:
            flows_without_packets += 1
            path.unlink(missing_ok=True)  # an earlier decode's file of this flow is no longer true
            return
        packets += written
        flows += 1
        written_paths.add(path)
        per_label[str(flow.label[0])] += 1

    for shard_path in tqdm(paths, desc="decode", unit="shard", disable=None):
        shard = read_shard_or_skip(shard_path, skipped)
        if shard is None:
            continue
        for flow_id, flow in shard.flows():
            if flow_id in split:
                pending.setdefault(flow_id, []).append(flow)
                continue
            emit(flow_id, flow)
    for flow_id, parts in pending.items():
        flow = Packets.concat(parts)
        emit(flow_id, flow.take(np.argsort(flow.packet_index, kind="stable")))
    if rows_without_ip:
        log.warning("%s: %d rows had no network header and were left out", src, rows_without_ip)
    if flows_without_packets:
        log.warning("%s: %d %s no row with a network header of the layout %s: no pcap written", src,
                    flows_without_packets, "flow had" if flows_without_packets == 1 else "flows had",
                    ",".join(layout.headers))
    # validate reads every capture in the folder: say when it holds more than this decode wrote
    other_pcaps = other_captures(out, written_paths, "decode")
    summary = {"flows": flows, "packets": packets, "rows_without_ip": rows_without_ip,
               "flows_without_packets": flows_without_packets, "other_pcaps_in_output": other_pcaps,
               "skipped_shards": skipped,
               "flows_per_label": dict(sorted(per_label.items())), "output": str(out)}
    write_json(out / SUMMARY_FILE, summary)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary
