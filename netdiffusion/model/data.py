"""Training data for the generative models: flows, template masks and timing statistics.

A dataset is one row per packet; models want one ``(packets, width)`` matrix per flow. Flows are
kept as one concatenated int8 array plus offsets (no per-packet objects), capped at ``packets``
rows (the paper's 1,024) and at ``max_flows_per_class`` flows per class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from netdiffusion.dataset import (
    Packets,
    clock_offsets,
    concat_shards,
    only_flows,
    read_layout,
    read_packets,
    read_shard,
    shard_paths,
    too_large_to_read_once,
)
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


def stratified_flows(presence: np.ndarray, offsets: np.ndarray, count: int, rng: np.random.Generator,
                     tries: int = 32) -> np.ndarray:
    """Indices of ``count`` of the flows (without replacement) that keep the set's header mix.

    ``presence`` is ``(rows, headers)``: which headers each packet carries, flows concatenated
    by ``offsets``. Flows are ordered by their dominant header stack and their length and drawn
    by systematic sampling (every n/count-th from a random offset); of ``tries`` offsets the one
    whose packet-weighted header mix is closest to the whole set's wins, then single-flow swaps
    refine it. A random subset of youtube's 910 flows was 5.8 points off the class's mix."""
    n = len(offsets) - 1
    if count >= n:
        return np.arange(n)
    presence = np.asarray(presence) > 0
    sizes = np.diff(offsets).astype(np.float64)
    flow_of_row = np.repeat(np.arange(n), np.diff(offsets))
    signature = presence.astype(np.int64) @ (np.int64(1) << np.arange(presence.shape[1]))
    stacks, stack_of_row = np.unique(signature, return_inverse=True)
    table = np.zeros((n, len(stacks)), dtype=np.int64)
    np.add.at(table, (flow_of_row, stack_of_row.ravel()), 1)
    dominant = stacks[table.argmax(axis=1)]  # per flow, the stack most of its packets carry
    order = np.lexsort((sizes, dominant))
    carried = np.zeros((n, presence.shape[1]), dtype=np.float64)  # packets per flow carrying each header
    np.add.at(carried, flow_of_row, presence.astype(np.float64))
    target = carried.sum(axis=0) / max(sizes.sum(), 1.0)
    best, best_err = order[:count], np.inf
    for u in rng.random(tries):
        cand = order[((np.arange(count) + u) * n / count).astype(np.int64)]
        err = np.abs(carried[cand].sum(axis=0) / max(sizes[cand].sum(), 1.0) - target).max()
        if err < best_err:
            best, best_err = cand, err
    # then swap single flows in and out while that brings the mix closer (big flows are coarse
    # grains: one more or fewer long UDP flow can move a small subset's mix by several points)
    chosen = np.zeros(n, dtype=bool)
    chosen[best] = True
    for _ in range(2 * count):
        inside, outside = np.flatnonzero(chosen), np.flatnonzero(~chosen)
        if len(outside) > 4096:  # keep each round's (inside x outside x headers) table small
            outside = rng.choice(outside, 4096, replace=False)
        total, size = carried[inside].sum(axis=0), sizes[inside].sum()
        new_total = total[None, None, :] - carried[inside][:, None, :] + carried[outside][None, :, :]
        new_size = np.maximum(size - sizes[inside][:, None] + sizes[outside][None, :], 1.0)
        err = np.abs(new_total / new_size[:, :, None] - target).max(axis=2)
        i, j = np.unravel_index(np.argmin(err), err.shape)
        if err[i, j] >= best_err - 1e-9:
            break
        chosen[inside[i]], chosen[outside[j]] = False, True
        best_err = err[i, j]
    return np.flatnonzero(chosen)


class _Rows(NamedTuple):
    """What choosing flows needs of every row, without its bits (a few bytes a row, not ~1,400)."""

    flow_id: np.ndarray
    packet_index: np.ndarray
    label: np.ndarray
    macro: np.ndarray
    presence: np.ndarray  # (rows, headers) bool


def _rows_without_bits(paths: list[Path], layout: Layout, classes: list[str] | None) -> _Rows:
    """Every shard read once, one at a time, keeping only what :func:`load_flows` chooses by."""
    parts = []
    for path in paths:
        pk = read_shard(path, classes)
        parts.append(_Rows(pk.flow_id, pk.packet_index, pk.label, pk.macro, layout.presence(pk.nprint)))
        del pk
    return _Rows(*(np.concatenate([getattr(p, k) for p in parts]) for k in _Rows._fields))


def _rows_of_flows(paths: list[Path], classes: list[str] | None, flow_ids: set[str]) -> Packets:
    """The rows of ``flow_ids``, shard by shard (memory: one shard and the chosen rows)."""
    parts = []
    for path in paths:
        parts.append(only_flows(read_shard(path, classes), flow_ids))
    return concat_shards(parts)


def load_flows(data: str | Path, *, packets: int = 1024, max_flows_per_class: int | None = None,
               classes: list[str] | None = None, seed: int = 0) -> FlowSet:
    """Read a dataset into a :class:`FlowSet`, sorted by flow, capped per flow and per class.

    A dataset over :data:`netdiffusion.dataset.READ_ONCE_BYTES` with a cap is read twice, a shard at a time: first
    without keeping the bits (to choose the flows), then keeping the chosen flows' rows only, so
    memory holds the training set, not the dataset; the flows chosen are the same."""
    layout = read_layout(data)
    paths = shard_paths(data)
    try:
        large = too_large_to_read_once(paths, layout.width)
    except (OSError, ValueError):  # a damaged shard: the plain read below names it
        large = False
    streamed = bool(max_flows_per_class) and large
    pk: Packets | _Rows = _rows_without_bits(paths, layout, classes) if streamed else read_packets(data, labels=classes)
    if len(pk.flow_id) == 0:
        raise ValueError(f"{data}: dataset has no packets" + (f" for classes {classes}" if classes else ""))
    order = np.lexsort((pk.packet_index, pk.flow_id))
    pk = pk._replace(**{k: getattr(pk, k)[order] for k in _Rows._fields}) if streamed else pk.take(order)
    ids = pk.flow_id
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    labels = pk.label[starts].astype(str)
    class_names = sorted(set(labels.tolist()))
    macros = {c: str(pk.macro[starts][labels == c][0] or "") for c in class_names}
    rng = np.random.default_rng(seed)
    keep = np.arange(len(starts))
    ends = np.minimum(ends, starts + packets)
    if max_flows_per_class and any((labels == c).sum() > max_flows_per_class for c in class_names):
        presence = pk.presence if streamed else layout.presence(pk.nprint)
        chosen = []
        for c in class_names:
            idx = np.flatnonzero(labels == c)
            if len(idx) > max_flows_per_class:
                rows = np.concatenate([np.arange(a, b) for a, b in zip(starts[idx], ends[idx], strict=True)])
                sub_offsets = np.r_[0, np.cumsum(ends[idx] - starts[idx])]
                idx = idx[stratified_flows(presence[rows], sub_offsets, max_flows_per_class, rng)]
            chosen.append(idx)
        keep = np.sort(np.concatenate(chosen))
    if streamed:  # now the bits, of the chosen flows only, in the same order
        pk = _rows_of_flows(paths, classes, set(ids[starts[keep]].astype(str).tolist()))
        pk = pk.take(np.lexsort((pk.packet_index, pk.flow_id)))
        ids = pk.flow_id
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.minimum(np.r_[starts[1:], len(ids)], starts + packets)
        keep = np.arange(len(starts))
    starts, ends, labels = starts[keep], ends[keep], pk.label[starts[keep]].astype(str)
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
    # a flow whose clock is broken (dataset.clock_offsets: fuzzed captures) adds no inter-arrival
    # time: its differences wrapped around int64 into ~1e19 ns gaps. (A packet stamped a little
    # early, another CPU's queue, is real: its negative gap counts as 0.)
    flow_of_row = np.repeat(np.arange(len(flows)), flows.lengths)
    broken = clock_offsets(flows.timestamp, flow_of_row, len(flows))[1][flow_of_row]
    for ci, name in enumerate(flows.classes):
        rows = row_class == ci
        iat = iat_all[rows & ~first & ~broken]
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


class Templates(NamedTuple):
    """One class's templates: per row the header bit counts and the direction (0 initiator, 1
    responder); flow ``i`` is rows ``offsets[i]:offsets[i+1]``. ``direction`` is None for models
    trained before templates kept it."""

    lengths: np.ndarray  # (rows, headers) int16
    offsets: np.ndarray  # (flows + 1,) int64
    direction: np.ndarray | None  # (rows,) int8


def build_templates(flows: FlowSet, per_class: int, seed: int = 0) -> dict[str, Templates]:
    """Compact templates per class: header bit counts and packet directions of up to ``per_class``
    real flows (a :func:`stratified_flows` subset, so the templates keep the class's header mix).

    Stored in the model directory so generation needs no dataset; see
    :func:`netdiffusion.image.header_lengths` (exact for nPrint data). No header bit values are
    kept: only which bits are present and which way each packet went."""
    rng = np.random.default_rng(seed + 7)
    out: dict[str, Templates] = {}
    for ci, name in enumerate(flows.classes):
        idx = np.flatnonzero(flows.class_index == ci)
        if not idx.size:
            continue
        lens = [header_lengths(flows.flow(i), flows.layout) for i in idx]
        if len(idx) > per_class:
            keep = stratified_flows(np.concatenate(lens) > 0, np.r_[0, np.cumsum([len(x) for x in lens])],
                                    per_class, rng)
            lens = [lens[i] for i in keep]
            idx = idx[keep]
        direction = np.concatenate([flows.direction[flows.offsets[i] : flows.offsets[i + 1]] for i in idx])
        out[name] = Templates(np.concatenate(lens).astype(np.int16),
                              np.r_[0, np.cumsum([len(x) for x in lens])].astype(np.int64),
                              direction.astype(np.int8))
    return out


def save_templates(path: Path, classes: list[str], templates: dict[str, Templates]) -> None:
    """``templates.npz``: per class index ``c<i>_lengths`` / ``c<i>_offsets`` / ``c<i>_direction``
    (names are in model.json)."""
    arrays = {}
    for i, name in enumerate(classes):
        t = templates[name]
        arrays[f"c{i}_lengths"], arrays[f"c{i}_offsets"] = t.lengths, t.offsets
        if t.direction is not None:
            arrays[f"c{i}_direction"] = t.direction
    np.savez_compressed(path, **arrays)


def load_templates(path: Path, classes: list[str]) -> dict[str, Templates]:
    with np.load(path) as z:
        return {name: Templates(z[f"c{i}_lengths"], z[f"c{i}_offsets"],
                                z[f"c{i}_direction"] if f"c{i}_direction" in z.files else None)
                for i, name in enumerate(classes)}
