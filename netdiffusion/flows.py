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


@dataclass
class FlowKeys:
    """Direction-free flow keys of a batch of packets, as integer components (one array each):
    protocol, low endpoint (address as two big-endian words, port), high endpoint, kind.

    Grouping hashes the components (no per-packet byte strings); the 39-byte key (:data:`KEY_BYTES`:
    proto, low endpoint 16 + 2 bytes, high endpoint, kind 2 bytes) is built only for the rows asked
    (:meth:`key_bytes`: a batch's first packet of each flow)."""

    # (8, n) uint64, one contiguous row per component: proto, low hi, low lo, low port, high hi,
    # high lo, high port, kind
    components: np.ndarray

    def __len__(self) -> int:
        return self.components.shape[1]

    def key_bytes(self, rows: np.ndarray) -> list[bytes]:
        w = self.components[:, rows].T
        key = np.empty((len(w), KEY_BYTES), dtype=np.uint8)
        key[:, 0] = w[:, 0]
        for at, (hi, lo, port) in ((1, (1, 2, 3)), (19, (4, 5, 6))):
            key[:, at:at + 8] = w[:, hi].astype(">u8").view(np.uint8).reshape(-1, 8)
            key[:, at + 8:at + 16] = w[:, lo].astype(">u8").view(np.uint8).reshape(-1, 8)
            key[:, at + 16:at + 18] = w[:, port].astype(">u2").view(np.uint8).reshape(-1, 2)
        key[:, 37:39] = w[:, 7].astype(">u2").view(np.uint8).reshape(-1, 2)
        return [bytes(k) for k in key]


def canonical_keys(proto: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray,
                   dport: np.ndarray, kind: np.ndarray | None = None) -> tuple[FlowKeys, np.ndarray]:
    """Direction-free flow keys and whether each packet's source is the low endpoint.

    Addresses are ``(n, 16)`` uint8, or already ``(n, 2)`` uint64 words (the 16 bytes read as two
    big-endian numbers, as the parser gives them). Endpoints compare as (address, port) big-endian
    byte strings, i.e. as (high word, low word, port) integers. ``kind`` (16 bits) separates flows
    that share addresses and ports, e.g. ICMP echo vs. ICMP errors between the same hosts."""
    n = len(proto)
    sa, da = _address_words(src), _address_words(dst)
    sport = (np.asarray(sport, dtype=np.int64) & 0xFFFF).astype(np.uint64)
    dport = (np.asarray(dport, dtype=np.int64) & 0xFFFF).astype(np.uint64)
    hi_lt, hi_eq = sa[:, 0] < da[:, 0], sa[:, 0] == da[:, 0]
    lo_lt, lo_eq = sa[:, 1] < da[:, 1], sa[:, 1] == da[:, 1]
    src_low = hi_lt | (hi_eq & (lo_lt | (lo_eq & (sport <= dport))))
    components = np.empty((8, n), dtype=np.uint64)  # component-major: every write below is contiguous
    np.bitwise_and(np.asarray(proto, dtype=np.int64), 0xFF, out=components[0], casting="unsafe")
    for i, (a, b) in enumerate(((sa[:, 0], da[:, 0]), (sa[:, 1], da[:, 1]), (sport, dport)), start=1):
        np.copyto(components[i], np.where(src_low, a, b))
        np.copyto(components[i + 3], np.where(src_low, b, a))
    components[7] = 0 if kind is None else np.asarray(kind, dtype=np.int64) & 0xFFFF
    return FlowKeys(components), src_low


def _address_words(address: np.ndarray) -> np.ndarray:
    if address.dtype == np.uint64:
        return address
    return np.ascontiguousarray(address, dtype=np.uint8).view(">u8").astype(np.uint64)


_HASH_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                              0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9],
                             dtype=np.uint64)


def _group_keys(keys: FlowKeys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, first, inverse)``: a stable order that puts equal keys together (capture order
    inside each group), each group's first packet, and each packet's group.

    Equal keys are found through a 64-bit hash of their components (one integer sort), checked
    exactly: if two distinct keys ever shared a hash, an exact row-wise unique decides."""
    components = keys.components
    n = len(keys)
    h = components[0] * _HASH_MULTIPLIERS[0]
    for i in range(1, len(components)):
        h ^= components[i] * _HASH_MULTIPLIERS[i]
        h ^= h >> np.uint64(29)
    order = np.argsort(h, kind="stable")
    sorted_h = h[order]
    new = np.empty(n, dtype=bool)
    new[:1] = True
    np.not_equal(sorted_h[1:], sorted_h[:-1], out=new[1:])
    group_sorted = np.cumsum(new) - 1
    first = order[new]
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = group_sorted
    # exact check: in hash order, a packet continuing its group has the key of the one before it
    same = np.ones(n - 1, dtype=bool)
    for component in components:
        in_order = component[order]
        same &= in_order[1:] == in_order[:-1]
    if not (same | new[1:]).all():  # a hash collision: exact path
        _, first, inverse = np.unique(components.T, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
    return order, first, inverse


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

    def assign(self, keys: FlowKeys, src_low: np.ndarray, ts_ns: np.ndarray,
               window: int | None) -> dict[str, np.ndarray]:
        """Flow number, position in flow, direction and sample-relative timestamp per packet.

        ``window``: packets per sample when long flows are cut into consecutive windows (the
        sample start then moves every ``window`` packets); ``None`` keeps one sample per flow."""
        n = len(keys)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return {"flow": empty, "position": empty, "direction": empty.astype(np.int8), "timestamp": empty}
        sort, first_idx, inverse = _group_keys(keys)
        # keep first-appearance order for new flows so flow numbers follow the capture
        order = np.argsort(first_idx, kind="stable")
        local_to_global = np.empty(len(first_idx), dtype=np.int64)
        ids = self.ids
        for u, k in zip(order.tolist(), keys.key_bytes(first_idx[order]), strict=True):
            g = ids.get(k)
            if g is None:
                g = len(self.keys)
                ids[k] = g
                self.keys.append(k)
            local_to_global[u] = g
        self._grow(len(self.keys))
        flow = local_to_global[inverse]
        # rank of each packet within its flow in this batch: ``sort`` groups each flow's packets
        # together, in capture order
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
