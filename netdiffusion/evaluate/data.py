"""Flow-indexed view of an encoded dataset, the unit every evaluation works on.

Packets are sorted once by ``(flow_id, packet_index)``; flows are then contiguous row ranges, so
"first K packets of every flow", per-flow labels and flow subsets are index arithmetic rather
than per-flow Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdiffusion.dataset import Packets, dataset_layout, only_flows, read_shard, shard_paths, skip_reason
from netdiffusion.fields import Layout

log = logging.getLogger(__name__)


@dataclass
class FlowSet:
    """Packets sorted into flows plus per-flow arrays (label, macro, source, length)."""

    packets: Packets
    starts: np.ndarray  # (flows,) first row of each flow
    lengths: np.ndarray  # (flows,) packets per flow
    flow_id: np.ndarray
    label: np.ndarray
    macro: np.ndarray
    source: np.ndarray

    @classmethod
    def from_packets(cls, packets: Packets) -> FlowSet:
        order = np.lexsort((packets.packet_index, packets.flow_id))
        packets = packets.take(order)
        ids = packets.flow_id
        if len(ids) == 0:
            empty = np.array([], dtype=object)
            return cls(packets, np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, empty, empty)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        lengths = np.diff(np.r_[starts, len(ids)])
        return cls(
            packets=packets,
            starts=starts.astype(np.int64),
            lengths=lengths.astype(np.int64),
            flow_id=ids[starts].astype(str),
            label=packets.label[starts].astype(str),
            macro=packets.macro[starts].astype(str),
            source=packets.source[starts].astype(str),
        )

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def n_packets(self) -> int:
        return len(self.packets)

    def packet_flow(self) -> np.ndarray:
        """Flow number (0..flows-1) of every packet row."""
        return np.repeat(np.arange(len(self)), self.lengths)

    def packet_position(self) -> np.ndarray:
        """Position of every packet row inside its flow (0-based)."""
        return np.arange(self.n_packets) - np.repeat(self.starts, self.lengths)

    def subset(self, flows: np.ndarray) -> FlowSet:
        """A new FlowSet with the chosen flows (boolean mask or indices), order kept."""
        idx = np.flatnonzero(flows) if np.asarray(flows).dtype == bool else np.asarray(flows, dtype=np.int64)
        if idx.size == 0:
            return FlowSet.from_packets(self.packets.take(np.zeros(0, np.int64)))
        lens = self.lengths[idx]
        offsets = self.starts[idx] - np.r_[0, np.cumsum(lens)[:-1]]
        rows = np.repeat(offsets, lens) + np.arange(int(lens.sum()))
        return FlowSet.from_packets(self.packets.take(rows))

    def first_k(self, k: int) -> FlowSet:
        """Only the first ``k`` packets of every flow (generated flows are ``k`` long)."""
        if k <= 0 or (self.lengths <= k).all():
            return self
        return FlowSet.from_packets(self.packets.take(np.flatnonzero(self.packet_position() < k)))

    def row_table(self, k: int) -> np.ndarray:
        """``(flows, k)`` row index of each flow's i-th packet, -1 where the flow is shorter."""
        table = np.full((len(self), k), -1, dtype=np.int64)
        pos = self.packet_position()
        keep = pos < k
        table[self.packet_flow()[keep], pos[keep]] = np.flatnonzero(keep)
        return table

    def with_macro_from(self, mapping: dict[str, str]) -> None:
        """Fill empty macro labels from a label -> macro map (generated data may lack them).

        Fills the packet rows too, so flow sets derived later (``first_k``, ``subset``) keep it."""
        packet_macro = np.array(self.packets.macro, dtype=object)  # object: no fixed-width truncation
        missing = packet_macro == ""
        if not missing.any():
            return
        packet_label = self.packets.label.astype(str)
        for label in np.unique(packet_label[missing]):
            packet_macro[missing & (packet_label == label)] = mapping.get(str(label), "")
        self.packets.macro = packet_macro
        self.macro = packet_macro[self.starts].astype(str)


def load(path: str | Path, classes: Sequence[str] | None = None, *, max_flows_per_class: int | None = None,
         seed: int = 0, sampled: dict[str, dict[str, int]] | None = None) -> tuple[FlowSet, Layout, list[str]]:
    """Read a dataset directory into a FlowSet with its layout.

    A shard that cannot be read (truncated, not Parquet, wrong schema) is logged with its path and
    reason and skipped; the list of skipped shards is returned for the report.

    ``max_flows_per_class``: a class with more flows keeps that many, drawn at random (``seed``
    and the class name fix the draw), and only their rows are kept while the shards are read one by
    one, so memory holds the sample, not the dataset (``flow_id`` and ``label`` are read first to
    choose). ``sampled`` (when given) receives ``{class: {"flows": all, "kept": kept}}``."""
    import pyarrow as pa

    path = Path(path)
    layout = dataset_layout(path)  # "no such dataset" for a missing path; shard widths checked
    shards = shard_paths(path)
    if not shards:
        raise FileNotFoundError(f"{path}: no Parquet shards")
    parts: list[Packets] = []
    skipped: list[str] = []
    read_errors = (OSError, ValueError, KeyError, pa.ArrowException)
    keep = _flows_to_keep(shards, classes, max_flows_per_class, seed, sampled, skipped, read_errors)
    for shard in shards:
        if str(shard) in skipped:
            continue
        try:
            part = read_shard(shard, classes)
            if part.nprint.shape[1] != layout.width:
                raise ValueError(f"{part.nprint.shape[1]} nPrint columns, fields.json has {layout.width}")
        except read_errors as exc:
            log.error("%s: unreadable shard skipped (%s)", shard, skip_reason(shard, exc))
            skipped.append(str(shard))
            continue
        parts.append(part if keep is None or not len(part) else only_flows(part, keep))
    if not parts:
        raise ValueError(f"{path}: none of its {len(shards)} shards could be read")
    flows = FlowSet.from_packets(parts[0] if len(parts) == 1 else Packets.concat(parts))
    log.info("%s: %d flows, %d packets, %d classes%s", path, len(flows), flows.n_packets,
             len(np.unique(flows.label)), f", {len(skipped)} shards skipped" if skipped else "")
    return flows, layout, skipped


def _flows_to_keep(shards: list[Path], classes: Sequence[str] | None, cap: int | None, seed: int,
                   sampled: dict[str, dict[str, int]] | None, skipped: list[str],
                   read_errors: tuple[type[BaseException], ...]) -> set[str] | None:
    """The flow ids to keep when some class has more than ``cap`` flows, else ``None`` (keep all)."""
    import zlib

    import pyarrow.parquet as pq

    if not cap or cap < 1:
        return None
    by_class: dict[str, set[str]] = {}
    for shard in shards:
        try:
            table = pq.read_table(shard, columns=["flow_id", "label"])
        except read_errors as exc:
            log.error("%s: unreadable shard skipped (%s)", shard, skip_reason(shard, exc))
            skipped.append(str(shard))
            continue
        ids = table.column("flow_id").to_numpy(zero_copy_only=False).astype(str)
        labels = table.column("label").to_numpy(zero_copy_only=False).astype(str)
        pairs = np.unique(np.stack([labels, ids], axis=1), axis=0) if len(ids) else np.zeros((0, 2), dtype=str)
        for label, fid in pairs.tolist():
            if classes is None or label in classes:
                by_class.setdefault(label, set()).add(fid)
    if all(len(f) <= cap for f in by_class.values()):
        return None
    keep: set[str] = set()
    for label, fids in sorted(by_class.items()):
        if len(fids) <= cap:
            keep |= fids
            continue
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        chosen = rng.choice(np.array(sorted(fids), dtype=object), size=cap, replace=False)
        keep |= set(chosen.tolist())
        if sampled is not None:
            sampled[label] = {"flows": len(fids), "kept": cap}
    return keep
