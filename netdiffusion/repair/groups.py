"""Grouped (segmented) numpy primitives: cumulative sums / maxima and firsts per contiguous group.

Repair works on many flows at once, each a contiguous run of rows; per-flow and per-direction
state (sequence numbers, endpoints, IP IDs) is computed with these instead of Python loops.
``gid`` is always a non-decreasing integer group id per element (groups contiguous)."""

from __future__ import annotations

import numpy as np


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


def cummax(values: np.ndarray, gid: np.ndarray, exclusive: bool = False,
           initial: int | np.ndarray | None = None) -> np.ndarray:
    """Running maximum within each group (int64). ``exclusive`` gives the max of earlier elements,
    ``initial`` (scalar or per element) where there is none; values must stay within +-2**40."""
    v = np.asarray(values, dtype=np.int64)
    if not len(v):
        return v.copy()
    lo = int(v.min())
    span = int(v.max()) - lo + 2
    g = np.cumsum(starts(gid)) - 1  # dense group index
    shifted = (v - lo + 1) + g * span
    acc = np.maximum.accumulate(shifted) - g * span + lo - 1
    if not exclusive:
        return acc
    out = np.empty_like(acc)
    out[1:] = acc[:-1]
    s = starts(gid)
    init = np.iinfo(np.int64).min // 4 if initial is None else initial
    out[s] = init if np.isscalar(init) else np.asarray(init)[s]
    return out


def mode(keys: np.ndarray, gid: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most common and second most common key per group (ties: first seen).

    ``keys`` int64 (or any sortable 1-D array); returns ``(top1, top2, has_top2)`` indexed by group
    id 0..ngroups-1 (``gid`` need not be sorted here). Groups without elements get key 0."""
    gid = np.asarray(gid, dtype=np.int64)
    order = _order_by(gid, keys)
    g, k = gid[order], keys[order]
    new = np.ones(len(g), dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (k[1:] != k[:-1])
    run_start = np.flatnonzero(new)
    counts = np.diff(np.r_[run_start, len(g)])
    rg, rk = g[run_start], k[run_start]
    mins = np.minimum.reduceat(order, run_start) if len(order) else run_start  # first appearance
    o2 = np.lexsort((mins, -counts, rg))
    rg, rk = rg[o2], rk[o2]
    r = rank(rg)
    top1 = np.zeros(ngroups, dtype=rk.dtype if len(rk) else np.int64)
    top2 = np.zeros(ngroups, dtype=top1.dtype)
    has2 = np.zeros(ngroups, dtype=bool)
    top1[rg[r == 0]] = rk[r == 0]
    top2[rg[r == 1]] = rk[r == 1]
    has2[rg[r == 1]] = True
    return top1, top2, has2


def _order_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """``np.lexsort((minor, major))``: one stable argsort of a combined key when both are integers
    whose combined range fits in int64 (same permutation: both sorts are stable)."""
    if len(major) and major.dtype.kind in "iu" and minor.dtype.kind in "iu":
        lo_m, hi_m = int(minor.min()), int(minor.max())
        lo_g, hi_g = int(major.min()), int(major.max())
        span = hi_m - lo_m + 1
        if (hi_g - lo_g + 1) * span < (1 << 62):
            key = (major.astype(np.int64) - lo_g) * span + (minor.astype(np.int64) - lo_m)
            return np.argsort(key, kind="stable")
    return np.lexsort((minor, major))
