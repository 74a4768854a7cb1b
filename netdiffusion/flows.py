"""Bidirectional flow assembly over a stream of parsed packet batches.

A flow is the set of packets sharing (protocol, {endpoint A, endpoint B}) where an endpoint is
(address, port); ICMP uses the query identifier in place of ports plus the type (request and reply
types paired) as a key qualifier, so echo requests and replies meet in one flow and ICMP errors
of each type form their own. Packets keep capture order; the first packet's sender is
the initiator (direction 0), the other side is the responder (direction 1).

Assembly is vectorized per batch: a canonical 39-byte key per packet, ``np.unique`` over the batch,
and a dict lookup per *distinct flow in the batch* (not per packet) to continue flows across
batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEY_BYTES = 39  # proto(1) + low endpoint (16 + 2) + high endpoint (16 + 2) + kind (2, ICMP type class)


def endpoint_bytes(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    """``(n, 18)`` uint8: a 16-byte address followed by a big-endian 16-bit port."""
    port = np.asarray(port, dtype=np.int64) & 0xFFFF
    return np.concatenate([addr, (port >> 8).astype(np.uint8)[:, None], (port & 0xFF).astype(np.uint8)[:, None]],
                          axis=1)


def canonical_keys(proto: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray,
                   dport: np.ndarray, kind: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Direction-free flow keys (void array) and whether each packet's source is the low endpoint.

    ``kind`` (16 bits) separates flows that share addresses and ports, e.g. ICMP echo vs. ICMP
    errors between the same hosts."""
    a = endpoint_bytes(src, sport)
    b = endpoint_bytes(dst, dport)
    differs = a != b
    first = np.argmax(differs, axis=1)
    rows = np.arange(a.shape[0])
    src_low = a[rows, first] <= b[rows, first]
    low = np.where(src_low[:, None], a, b)
    high = np.where(src_low[:, None], b, a)
    k = np.zeros(a.shape[0], dtype=np.int64) if kind is None else np.asarray(kind, dtype=np.int64) & 0xFFFF
    key = np.concatenate([(np.asarray(proto, dtype=np.int64) & 0xFF).astype(np.uint8)[:, None], low, high,
                          (k >> 8).astype(np.uint8)[:, None], (k & 0xFF).astype(np.uint8)[:, None]], axis=1)
    key = np.ascontiguousarray(key)
    return key.view(np.dtype((np.void, KEY_BYTES))).ravel(), src_low


@dataclass
class FlowTable:
    """Running flow state of one capture: ids by first appearance, counts, initiator, sample starts."""

    ids: dict[bytes, int] = field(default_factory=dict)
    keys: list[bytes] = field(default_factory=list)
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    initiator_low: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    sample_start_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.keys)

    def _grow(self, size: int) -> None:
        if size <= len(self.count):
            return
        new = max(size, 2 * len(self.count), 1024)
        for name, fill in (("count", 0), ("initiator_low", False), ("sample_start_ns", 0)):
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)

    def assign(self, keys: np.ndarray, src_low: np.ndarray, ts_ns: np.ndarray,
               window: int | None) -> dict[str, np.ndarray]:
        """Flow number, position in flow, direction and sample-relative timestamp per packet.

        ``window``: packets per sample when long flows are cut into consecutive windows (the
        sample start then moves every ``window`` packets); ``None`` keeps one sample per flow."""
        n = keys.shape[0]
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return {"flow": empty, "position": empty, "direction": empty.astype(np.int8), "timestamp": empty}
        uniq, first_idx, inverse = np.unique(keys, return_index=True, return_inverse=True)
        # keep first-appearance order for new flows so flow numbers follow the capture
        order = np.argsort(first_idx, kind="stable")
        local_to_global = np.empty(len(uniq), dtype=np.int64)
        ids = self.ids
        for u in order.tolist():
            k = uniq[u].tobytes()
            g = ids.get(k)
            if g is None:
                g = len(self.keys)
                ids[k] = g
                self.keys.append(k)
            local_to_global[u] = g
        self._grow(len(self.keys))
        flow = local_to_global[inverse.reshape(-1)]
        # rank of each packet within its flow in this batch (stable: capture order)
        sort = np.argsort(flow, kind="stable")
        sorted_flow = flow[sort]
        starts = np.r_[True, sorted_flow[1:] != sorted_flow[:-1]]
        group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        rank = np.empty(n, dtype=np.int64)
        rank[sort] = np.arange(n) - group_start
        position = self.count[flow] + rank
        new_flow = position == 0
        self.initiator_low[flow[new_flow]] = src_low[new_flow]
        direction = (src_low != self.initiator_low[flow]).astype(np.int8)
        # sample start timestamps
        index = position if window is None else position % window
        sorted_index = index[sort]
        sorted_ts = ts_ns[sort]
        seg = (sorted_index == 0) | starts
        last = np.maximum.accumulate(np.where(seg, np.arange(n), 0))
        begins_here = sorted_index[last] == 0
        start_ts = np.where(begins_here, sorted_ts[last], self.sample_start_ns[sorted_flow])
        relative = np.empty(n, dtype=np.int64)
        relative[sort] = sorted_ts - start_ts
        # remember the latest sample start per flow for the next batch
        zero = sorted_index == 0
        self.sample_start_ns[sorted_flow[zero]] = sorted_ts[zero]  # later writes win (sorted order)
        self.count += np.bincount(flow, minlength=len(self.count))
        return {"flow": flow, "position": position, "direction": direction, "timestamp": relative}
