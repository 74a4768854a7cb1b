"""Training data for the generative models: flows, template masks and timing statistics.

A dataset is one row per packet; models want one ``(packets, width)`` matrix per flow. Flows are
kept as one concatenated int8 array plus offsets (no per-packet objects), capped at ``packets``
rows (the paper's 1,024) and at ``max_flows_per_class`` flows per class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdiffusion.dataset import Packets, read_layout, read_packets
from netdiffusion.fields import Layout
from netdiffusion.image import header_lengths

log = logging.getLogger(__name__)

TIMING_QUANTILES = 101


@dataclass
class FlowSet:
    """Flows of a dataset: ``bits[offsets[i]:offsets[i+1]]`` is flow ``i``'s matrix."""

    layout: Layout
    classes: list[str]
    macros: dict[str, str]
    bits: np.ndarray  # (total_rows, width) int8
    offsets: np.ndarray  # (flows + 1,) int64
    class_index: np.ndarray  # (flows,) int64
    timestamp: np.ndarray  # (total_rows,) int64, ns since flow start
    direction: np.ndarray  # (total_rows,) int8

    def __len__(self) -> int:
        return len(self.class_index)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def flow(self, i: int) -> np.ndarray:
        return self.bits[self.offsets[i] : self.offsets[i + 1]]


def load_flows(data: str | Path, *, packets: int = 1024, max_flows_per_class: int | None = None,
               classes: list[str] | None = None, seed: int = 0) -> FlowSet:
    """Read a dataset into a :class:`FlowSet`, sorted by flow, capped per flow and per class."""
    layout = read_layout(data)
    pk: Packets = read_packets(data, labels=classes)
    if len(pk) == 0:
        raise ValueError(f"{data}: dataset has no packets" + (f" for classes {classes}" if classes else ""))
    order = np.lexsort((pk.packet_index, pk.flow_id))
    pk = pk.take(order)
    ids = pk.flow_id
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    labels = pk.label[starts].astype(str)
    class_names = sorted(set(labels.tolist()))
    macros = {c: str(pk.macro[starts][labels == c][0] or "") for c in class_names}
    rng = np.random.default_rng(seed)
    keep = np.arange(len(starts))
    if max_flows_per_class:
        chosen = []
        for c in class_names:
            idx = np.flatnonzero(labels == c)
            if len(idx) > max_flows_per_class:
                idx = np.sort(rng.choice(idx, max_flows_per_class, replace=False))
            chosen.append(idx)
        keep = np.sort(np.concatenate(chosen))
    starts, ends, labels = starts[keep], ends[keep], labels[keep]
    ends = np.minimum(ends, starts + packets)
    lengths = ends - starts
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends, strict=True)])
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    lookup = {c: i for i, c in enumerate(class_names)}
    class_index = np.array([lookup[c] for c in labels], dtype=np.int64)
    log.info("loaded %d flows (%d packets) of %d classes from %s", len(keep), len(rows), len(class_names), data)
    return FlowSet(layout, class_names, macros, np.ascontiguousarray(pk.nprint[rows]), offsets, class_index,
                   pk.timestamp[rows].astype(np.int64), pk.direction[rows].astype(np.int8))


def timing_stats(flows: FlowSet) -> dict:
    """Per class: empirical inter-arrival quantiles (ns), direction mix and flow lengths.

    Generation draws each flow's timestamps from these by inverse-CDF sampling, so synthetic
    flows keep each class's timing shape without the model having to learn it."""
    q = np.linspace(0, 1, TIMING_QUANTILES)
    out: dict[str, dict] = {}
    first = np.zeros(len(flows.timestamp), dtype=bool)
    first[flows.offsets[:-1]] = True
    iat_all = np.diff(flows.timestamp, prepend=0)
    dir_change = np.r_[False, flows.direction[1:] != flows.direction[:-1]]
    row_class = np.repeat(flows.class_index, flows.lengths)
    for ci, name in enumerate(flows.classes):
        rows = row_class == ci
        iat = iat_all[rows & ~first]
        iat = np.clip(iat, 0, None)
        direction = flows.direction[rows]
        changes = dir_change[rows & ~first]
        lengths = flows.lengths[flows.class_index == ci]
        if not lengths.size:
            continue
        out[name] = {
            "flows": int(len(lengths)),
            "packets": int(rows.sum()),
            "iat_ns_quantiles": np.quantile(iat, q).round().astype(np.int64).tolist() if iat.size else [0, 0],
            "iat_ns_mean": float(iat.mean()) if iat.size else 0.0,
            "responder_share": float((direction == 1).mean()) if direction.size else 0.0,
            "direction_change_rate": float(changes.mean()) if changes.size else 0.0,
            "flow_packets_quantiles": np.quantile(lengths, q[::10]).round().astype(int).tolist(),
        }
    return out


def sample_timestamps(stats: dict, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Timestamps (ns since flow start) for flows of these lengths, concatenated in flow order."""
    quantiles = np.asarray(stats["iat_ns_quantiles"], dtype=np.float64)
    grid = np.linspace(0, 1, len(quantiles))
    total = int(np.sum(lengths))
    iat = np.interp(rng.random(total), grid, quantiles).round().astype(np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    iat[starts[np.asarray(lengths) > 0]] = 0
    csum = np.cumsum(iat)
    # restart the running sum at each flow start
    base = np.repeat(csum[starts] - iat[starts], lengths)
    return csum - base


def build_templates(flows: FlowSet, per_class: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Compact presence templates per class: header bit counts of up to ``per_class`` real flows.

    Stored in the model directory so generation needs no dataset; see
    :func:`netdiffusion.image.header_lengths` (exact for nPrint data)."""
    rng = np.random.default_rng(seed + 7)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for ci, name in enumerate(flows.classes):
        idx = np.flatnonzero(flows.class_index == ci)
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        if not idx.size:
            continue
        lens = [header_lengths(flows.flow(i), flows.layout) for i in idx]
        out[name] = (np.concatenate(lens).astype(np.int16),
                     np.r_[0, np.cumsum([len(x) for x in lens])].astype(np.int64))
    return out


def save_templates(path: Path, classes: list[str], templates: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``templates.npz``: per class index ``c<i>_lengths`` / ``c<i>_offsets`` (names are in model.json)."""
    arrays = {}
    for i, name in enumerate(classes):
        arrays[f"c{i}_lengths"], arrays[f"c{i}_offsets"] = templates[name]
    np.savez_compressed(path, **arrays)


def load_templates(path: Path, classes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(path) as z:
        return {name: (z[f"c{i}_lengths"], z[f"c{i}_offsets"]) for i, name in enumerate(classes)}
