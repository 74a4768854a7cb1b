"""Grouped (segmented) numpy primitives: cumulative sums / maxima and firsts per contiguous group.

Repair works on many flows at once, each a contiguous run of rows; per-flow and per-direction
state (sequence numbers, endpoints, IP IDs) is computed with these instead of Python loops.
``gid`` is always a non-decreasing integer group id per element (groups contiguous)."""

from __future__ import annotations

import numpy as np

from netdiffusion.jit import kernel


def starts(gid: np.ndarray) -> np.ndarray:
    """Boolean: element is the first of its group."""
    out = np.ones(len(gid), dtype=bool)
    if len(gid) > 1:
        out[1:] = gid[1:] != gid[:-1]
    return out


def ends(gid: np.ndarray) -> np.ndarray:
    """Boolean: element is the last of its group."""
    out = np.ones(len(gid), dtype=bool)
    if len(gid) > 1:
        out[:-1] = gid[1:] != gid[:-1]
    return out


def rank(gid: np.ndarray) -> np.ndarray:
    """0-based position of each element within its group."""
    idx = np.arange(len(gid))
    first = np.maximum.accumulate(np.where(starts(gid), idx, 0)) if len(gid) else idx
    return idx - first


def first_value(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Each element gets the value of its group's first element."""
    s = starts(gid)
    return values[s][np.cumsum(s) - 1]


def cumsum_excl(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum within each group (sum of the earlier elements)."""
    v = np.asarray(values, dtype=np.int64)
    c = np.cumsum(v) - v
    return c - first_value(c, gid)


def cumsum_incl(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    return cumsum_excl(values, gid) + np.asarray(values, dtype=np.int64)


def cummax(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    """Running maximum within each group (int64), any int64 values: one compiled pass. (Before,
    one ``np.maximum.accumulate`` over values shifted by group: past +-2**40 per group the shift
    overflowed, and a fuzzed capture's timestamps, up to 9.2e18 ns into its flow, came out
    negative and stopped the run: tcpdump's test captures cut into windows, session 24.)"""
    return _cummax(np.ascontiguousarray(values, dtype=np.int64), np.ascontiguousarray(gid))


@kernel
def _cummax(values: np.ndarray, gid: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        if i == 0 or gid[i] != gid[i - 1] or values[i] > out[i - 1]:
            out[i] = values[i]
        else:
            out[i] = out[i - 1]
    return out


def mode(keys: np.ndarray, gid: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most common and second most common key per group (ties: first seen).

    ``keys`` integers; returns ``(top1, top2, has_top2)`` indexed by group id 0..ngroups-1
    (``gid`` need not be sorted here). Groups without elements get key 0. One compiled pass
    (a hash count per group) instead of sorting every element by (group, key)."""
    keys = np.asarray(keys)
    top1, top2, has2 = _mode(np.ascontiguousarray(keys, dtype=np.int64),
                             np.ascontiguousarray(gid, dtype=np.int64), int(ngroups))
    if len(keys) and keys.dtype != np.int64:
        top1, top2 = top1.astype(keys.dtype), top2.astype(keys.dtype)
    return top1, top2, has2


@kernel
def _mode(keys: np.ndarray, gid: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mode`: elements grouped by a stable counting sort, then per group an open-addressing
    table of (key, count, first index); the winners by count, then first index."""
    n = len(keys)
    start = np.zeros(ngroups + 1, dtype=np.int64)
    for i in range(n):
        start[gid[i] + 1] += 1
    largest = 0
    for g in range(ngroups):
        largest = max(largest, start[g + 1])
        start[g + 1] += start[g]
    order = np.empty(n, dtype=np.int64)
    fill = start[:-1].copy()
    for i in range(n):
        order[fill[gid[i]]] = i
        fill[gid[i]] += 1
    size = 4
    while size < 2 * largest:
        size *= 2
    slot_key = np.empty(size, dtype=np.int64)
    slot_count = np.zeros(size, dtype=np.int64)
    slot_first = np.empty(size, dtype=np.int64)
    used = np.empty(max(largest, 1), dtype=np.int64)
    top1 = np.zeros(ngroups, dtype=np.int64)
    top2 = np.zeros(ngroups, dtype=np.int64)
    has2 = np.zeros(ngroups, dtype=np.bool_)
    shift = np.uint64(64 - int(np.log2(size)))
    for g in range(ngroups):
        nu = 0
        for q in range(start[g], start[g + 1]):
            i = order[q]  # increasing: the first element of a key is its first appearance
            k = keys[i]
            h = np.int64((np.uint64(k) * np.uint64(0x9E3779B97F4A7C15)) >> shift)
            while slot_count[h] and slot_key[h] != k:
                h = (h + 1) & (size - 1)
            if slot_count[h] == 0:
                slot_key[h] = k
                slot_first[h] = i
                used[nu] = h
                nu += 1
            slot_count[h] += 1
        b1 = -1
        b2 = -1
        for u in range(nu):
            h = used[u]
            if b1 < 0 or slot_count[h] > slot_count[b1] or (slot_count[h] == slot_count[b1]
                                                              and slot_first[h] < slot_first[b1]):
                b2 = b1
                b1 = h
            elif b2 < 0 or slot_count[h] > slot_count[b2] or (slot_count[h] == slot_count[b2]
                                                                and slot_first[h] < slot_first[b2]):
                b2 = h
        if b1 >= 0:
            top1[g] = slot_key[b1]
        if b2 >= 0:
            top2[g] = slot_key[b2]
            has2[g] = True
        for u in range(nu):
            slot_count[used[u]] = 0
    return top1, top2, has2
