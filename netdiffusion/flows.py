"""Bidirectional flow assembly over a stream of parsed packet batches.

A flow is the set of packets sharing (protocol, {endpoint A, endpoint B}) where an endpoint is
(address, port); ICMP uses the query identifier in place of ports plus the type (request and reply
types paired) as a key qualifier, so echo requests and replies meet in one flow and ICMP errors
of each type form their own. Packets keep capture order; the first packet's sender is
the initiator (direction 0), the other side is the responder (direction 1).

Assembly is vectorized per batch: a canonical 39-byte key per packet, a hashed unique over the batch,
and a dict lookup per *distinct flow in the batch* (not per packet) to continue flows across
batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEY_BYTES = 39  # proto(1) + low endpoint (16 + 2) + high endpoint (16 + 2) + kind (2, ICMP type class)


_KEY_STRIDE = 40  # KEY_BYTES + one zero byte: five uint64 words per key, for hashing


def canonical_keys(proto: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray,
                   dport: np.ndarray, kind: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Direction-free flow keys and whether each packet's source is the low endpoint.

    Keys are a void array of 40-byte items: the 39-byte key (proto, low endpoint, high endpoint,
    kind) and a zero byte, so that :meth:`FlowTable.assign` can hash them as five uint64 words.
    ``kind`` (16 bits) separates flows that share addresses and ports, e.g. ICMP echo vs. ICMP
    errors between the same hosts. Endpoints compare as (address, port) big-endian byte strings."""
    n = len(proto)
    src = np.ascontiguousarray(src, dtype=np.uint8)
    dst = np.ascontiguousarray(dst, dtype=np.uint8)
    sport = np.asarray(sport, dtype=np.int64) & 0xFFFF
    dport = np.asarray(dport, dtype=np.int64) & 0xFFFF
    # (address, port) <= (address, port) lexicographically: big-endian words compare like the bytes
    sa, da = src.view(">u8"), dst.view(">u8")
    hi_lt, hi_eq = sa[:, 0] < da[:, 0], sa[:, 0] == da[:, 0]
    lo_lt, lo_eq = sa[:, 1] < da[:, 1], sa[:, 1] == da[:, 1]
    src_low = hi_lt | (hi_eq & (lo_lt | (lo_eq & (sport <= dport))))
    k = np.zeros(n, dtype=np.int64) if kind is None else np.asarray(kind, dtype=np.int64) & 0xFFFF
    key = np.empty((n, _KEY_STRIDE), dtype=np.uint8)
    key[:, 0] = np.asarray(proto, dtype=np.int64) & 0xFF
    low, high = np.where(src_low[:, None], src, dst), np.where(src_low[:, None], dst, src)
    low_port, high_port = np.where(src_low, sport, dport), np.where(src_low, dport, sport)
    key[:, 1:17] = low
    key[:, 17] = low_port >> 8
    key[:, 18] = low_port & 0xFF
    key[:, 19:35] = high
    key[:, 35] = high_port >> 8
    key[:, 36] = high_port & 0xFF
    key[:, 37] = k >> 8
    key[:, 38] = k & 0xFF
    key[:, 39] = 0
    return key.view(np.dtype((np.void, _KEY_STRIDE))).ravel(), src_low


_HASH_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                              0xD6E8FEB86659FD93, 0xFF51AFD7ED558CCD], dtype=np.uint64)


def _unique_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first index, inverse)`` of ``np.unique`` over 40-byte keys, through a 64-bit hash of
    their words (an integer sort instead of a byte-string sort), checked exactly: if two distinct
    keys ever share a hash, the byte-string unique decides."""
    words = keys.view(np.uint64).reshape(len(keys), _KEY_STRIDE // 8)
    h = words[:, 0] * _HASH_MULTIPLIERS[0]
    for i in range(1, words.shape[1]):
        h ^= words[:, i] * _HASH_MULTIPLIERS[i]
        h ^= h >> np.uint64(29)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not (words == words[first[inverse]]).all():  # a hash collision: exact path
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


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
        first_idx, inverse = _unique_keys(keys)
        # keep first-appearance order for new flows so flow numbers follow the capture
        order = np.argsort(first_idx, kind="stable")
        local_to_global = np.empty(len(first_idx), dtype=np.int64)
        ids = self.ids
        for u, k in zip(order.tolist(), keys[first_idx[order]].tolist(), strict=True):
            k = k[:KEY_BYTES]
            g = ids.get(k)
            if g is None:
                g = len(self.keys)
                ids[k] = g
                self.keys.append(k)
            local_to_global[u] = g
        self._grow(len(self.keys))
        flow = local_to_global[inverse]
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
