"""Distribution distances, vectorized: Jensen-Shannon divergence (base 2), total variation, Hellinger.

All three are bounded by 1 (JSD in base 2), are 0 for identical distributions and 1 for disjoint
supports, so per-field numbers can be averaged and compared with the paper's Table 3. Inputs are
count (or probability) vectors along the last axis; many distributions are handled at once so
per-class and per-bit tables cost one numpy call.
"""

from __future__ import annotations

import numpy as np

METRICS: tuple[str, ...] = ("jsd", "tvd", "hd")


def _normalise(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def distances(p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """JSD (base 2), TVD and Hellinger distance between ``p`` and ``q`` along the last axis.

    ``p``/``q`` are counts or probabilities over the same categories; an all-zero (or empty)
    vector gives NaN (no data is not the same as a perfect match)."""
    p = _normalise(p)
    q = _normalise(q)
    m = 0.5 * (p + q)
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_pm = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        kl_qm = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
    jsd = 0.5 * kl_pm.sum(axis=-1) + 0.5 * kl_qm.sum(axis=-1)
    tvd = 0.5 * np.abs(p - q).sum(axis=-1)
    hd = np.sqrt(np.clip(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(axis=-1), 0.0, 1.0))
    # propagate NaN rows (an empty side, or no category at all: both sides empty) explicitly;
    # clip float noise into [0, 1]
    nan = np.isnan(p).any(axis=-1) | np.isnan(q).any(axis=-1) | (p.shape[-1] == 0)
    out = {}
    for name, value in (("jsd", jsd), ("tvd", tvd), ("hd", hd)):
        value = np.clip(np.asarray(value, dtype=np.float64), 0.0, 1.0)
        out[name] = np.where(nan, np.nan, value)
    return out


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 identical, 1 disjoint)."""
    return float(distances(p, q)["jsd"])


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance, half the L1 distance between the distributions."""
    return float(distances(p, q)["tvd"])


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance, ``sqrt(1 - sum sqrt(p q))``."""
    return float(distances(p, q)["hd"])


def category_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Shared integer category codes for two samples of hashable keys (ints or fixed bytes)."""
    joint = np.concatenate([a, b])
    _, inverse = np.unique(joint, return_inverse=True)
    inverse = inverse.ravel()
    n_cat = int(inverse.max()) + 1 if inverse.size else 0
    return inverse[: len(a)], inverse[len(a):], n_cat


def sample_distances(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Distances between the empirical distributions of two categorical samples."""
    if len(a) == 0 or len(b) == 0:
        return {m: float("nan") for m in METRICS}
    ca, cb, n = category_codes(a, b)
    d = distances(np.bincount(ca, minlength=n), np.bincount(cb, minlength=n))
    return {k: float(v) for k, v in d.items()}


def grouped_counts(codes: np.ndarray, groups: np.ndarray, n_groups: int, n_cat: int) -> np.ndarray:
    """``(n_groups, n_cat)`` histogram of category codes per group in one bincount."""
    flat = groups.astype(np.int64) * n_cat + codes.astype(np.int64)
    return np.bincount(flat, minlength=n_groups * n_cat).reshape(n_groups, n_cat)


def histogram_tvd(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """TVD between two numeric samples binned on shared edges (for flow statistics)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return float("nan")
    ha = np.histogram(np.clip(a, bins[0], bins[-1]), bins=bins)[0]
    hb = np.histogram(np.clip(b, bins[0], bins[-1]), bins=bins)[0]
    return float(distances(ha, hb)["tvd"])
