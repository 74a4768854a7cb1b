"""Generation variation (paper Appendix B) and memorisation of training flows.

Variation: for each class and header field, the mean pairwise normalised Hamming distance between
flows (their field bits over the first packets), for synthetic flows of one prompt and, as the
reference, for real flows of the same class. A mode-collapsed generator scores near 0.

Memorisation: the share of synthetic flows whose address/port tuple or whole header sequence
equals a training flow's, and the nearest-neighbour Hamming distance synthetic -> train against
held-out real -> train (a generator that copies sits far below the real reference).
"""

from __future__ import annotations

import hashlib

import numpy as np

from netdiffusion.evaluate.data import FlowSet
from netdiffusion.fields import ABSENT, Layout

TUPLE_FIELDS: tuple[str, ...] = (
    "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "tcp_sprt", "tcp_dprt", "udp_sport", "udp_dport",
)


def _mismatch(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``(len(a), len(b))`` share of positions where two {-1,0,1} vectors differ (one matmul per value)."""
    d = a.shape[1]
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    if d == 0:
        out[:] = 0.0
        return out
    bh = [(b == v).astype(np.float32) for v in (-1, 0, 1)]
    for s in range(0, a.shape[0], chunk):
        blk = a[s:s + chunk]
        same = sum((blk == v).astype(np.float32) @ bh[i].T for i, v in enumerate((-1, 0, 1)))
        out[s:s + chunk] = 1.0 - same / d
    return out


def _flow_blocks(fs: FlowSet, k: int) -> np.ndarray:
    """``(flows, k, width)`` int8 first-k packets per flow, padded with -1."""
    table = fs.row_table(k)
    blocks = fs.packets.nprint[np.clip(table, 0, None)]
    blocks[table < 0] = ABSENT
    return blocks


def variation(synthetic: FlowSet, real: FlowSet, layout: Layout, classes: list[str], k: int = 32,
              max_flows: int = 40, seed: int = 0) -> dict:
    """Mean pairwise per-field Hamming distance between flows of the same class, synthetic vs real."""
    rng = np.random.default_rng(seed)
    per_field: dict[str, dict[str, list[float]]] = {}
    per_class: dict[str, dict[str, float]] = {}
    for cls in classes:
        row: dict[str, float] = {}
        blocks = {}
        for side, fs in (("synthetic", synthetic), ("real", real)):
            idx = np.flatnonzero(fs.label == cls)
            if idx.size < 2:
                continue
            idx = np.sort(rng.choice(idx, min(max_flows, idx.size), replace=False))
            blocks[side] = _flow_blocks(fs.subset(idx), k)
        if len(blocks) < 2:
            continue
        sums = {"synthetic": [], "real": []}
        for field in layout.fields:
            sl = layout.field_slice(field)
            fb = {s: b[:, :, sl].reshape(b.shape[0], -1) for s, b in blocks.items()}
            if all((v == ABSENT).all() for v in fb.values()):
                continue
            for side, x in fb.items():
                dist = _mismatch(x, x)
                n = dist.shape[0]
                value = float(dist.sum() / (n * (n - 1)))
                per_field.setdefault(field.key, {"synthetic": [], "real": []})[side].append(value)
                sums[side].append(value)
        for side in sums:
            row[side] = float(np.mean(sums[side])) if sums[side] else float("nan")
        per_class[cls] = row
    fields = {
        key: {side: float(np.mean(v)) if v else float("nan") for side, v in sides.items()}
        for key, sides in per_field.items()
    }
    mean = {
        side: float(np.nanmean([v[side] for v in fields.values()])) if fields else float("nan")
        for side in ("synthetic", "real")
    }
    return {"mean": mean, "per_field": fields, "per_class": per_class, "packets": k,
            "flows_per_class": max_flows}


def _tuple_keys(fs: FlowSet, layout: Layout) -> set[bytes] | list[bytes]:
    cols = np.concatenate([np.arange(layout.field_slice(f).start, layout.field_slice(f).stop)
                           for f in TUPLE_FIELDS if f.split("_")[0] in layout.headers])
    first = fs.packets.nprint[fs.starts][:, cols]
    return [row.tobytes() for row in np.ascontiguousarray(first)]


def _sequence_keys(fs: FlowSet, k: int) -> list[bytes]:
    """Digest of each flow's first-k nPrint rows (length included), hashed in place, no padding copy."""
    m = np.ascontiguousarray(fs.packets.nprint)
    keys = []
    for start, n in zip(fs.starts, np.minimum(fs.lengths, k), strict=True):
        digest = hashlib.blake2b(m[start:start + n].tobytes(), digest_size=16)
        digest.update(int(n).to_bytes(4, "little"))
        keys.append(digest.digest())
    return keys


def _summary(d: np.ndarray) -> dict[str, float]:
    if d.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p05": float("nan")}
    return {"mean": float(d.mean()), "median": float(np.median(d)), "p05": float(np.percentile(d, 5))}


def memorisation(train: FlowSet, real: FlowSet, synthetic: FlowSet, layout: Layout, k: int,
                 x_train: np.ndarray, x_real: np.ndarray, x_synthetic: np.ndarray, seed: int = 0,
                 max_train: int = 4000) -> dict:
    """Exact-copy shares (tuple, header sequence) and nearest-neighbour Hamming distances to train.

    ``x_*`` are the ML feature matrices (first K packets, same feature space); held-out real flows
    give the reference for what "not copied" looks like."""
    train_tuples = set(_tuple_keys(train, layout))
    train_seqs = set(_sequence_keys(train, k))
    out: dict = {}
    for side, fs in (("synthetic", synthetic), ("real", real)):
        tuples = _tuple_keys(fs, layout)
        seqs = _sequence_keys(fs, k)
        out[f"{side}_tuple_in_train"] = float(np.mean([t in train_tuples for t in tuples])) if tuples else float("nan")
        out[f"{side}_sequence_in_train"] = float(np.mean([s in train_seqs for s in seqs])) if seqs else float("nan")
    rng = np.random.default_rng(seed)
    if x_train.shape[0] > max_train:
        x_train = x_train[np.sort(rng.choice(x_train.shape[0], max_train, replace=False))]
    nn = {}
    for side, x in (("synthetic", x_synthetic), ("real", x_real)):
        nn[side] = _mismatch(x, x_train).min(axis=1) if x.shape[0] and x_train.shape[0] else np.zeros(0)
    out["nn_hamming_synthetic_to_train"] = _summary(nn["synthetic"])
    out["nn_hamming_real_to_train"] = _summary(nn["real"])
    if nn["real"].size and nn["synthetic"].size:
        threshold = float(np.percentile(nn["real"], 5))
        out["synthetic_closer_than_real_p05"] = float((nn["synthetic"] < threshold).mean())
    else:
        out["synthetic_closer_than_real_p05"] = float("nan")
    return out
