"""Statistical similarity of two packet sets: per nPrint field, per bit, per class (paper Table 3).

A field's value is the integer of its bits (``Layout.field_keys``; wide fields such as addresses
and options keep their raw bit vector), and "absent" (any bit -1) is its own category, so a
generator that drops or invents headers is penalised as much as one that gets values wrong.
Averages run over the *observed* fields -- fields present in at least one packet of either side --
because fields absent everywhere (e.g. ICMP in TCP-only data) would add free zeros.
"""

from __future__ import annotations

import numpy as np

from netdiffusion.evaluate.data import FlowSet
from netdiffusion.evaluate.metrics import METRICS, category_codes, distances, grouped_counts
from netdiffusion.fields import ABSENT, Layout

PROTOCOL_FIELD = "protocol"
"""Derived field: IP protocol number (``ipv4_proto``, else ``ipv6_nh``), -1 without an IP header."""


def protocol_values(layout: Layout, matrix: np.ndarray) -> np.ndarray:
    """The paper's protocol field, unified over IPv4 and IPv6 so mixed-family data compares."""
    out = np.full(matrix.shape[0], -1, dtype=np.int64)
    if "ipv6" in layout.headers:
        v6 = layout.field_values(matrix, "ipv6_nh")
        out = np.where(v6 >= 0, v6, out)
    if "ipv4" in layout.headers:
        v4 = layout.field_values(matrix, "ipv4_proto")
        out = np.where(v4 >= 0, v4, out)
    return out


def _class_ids(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(x, -1) for x in labels], dtype=np.int64)


def _means(rows: dict[str, dict[str, float]], keys: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in METRICS:
        vals = np.array([rows[k][m] for k in keys if k in rows], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[m] = float(vals.mean()) if vals.size else float("nan")
    return out


def compare(a: FlowSet, b: FlowSet, layout: Layout, classes: list[str]) -> dict:
    """Per-field, per-bit and per-class distances between the packets of ``a`` and ``b``.

    Returns ``overall`` (means over observed fields, plus ``protocol`` and ``bits``), ``per_field``,
    ``per_class`` (mean over observed fields within each class present on both sides),
    ``per_field_class`` and ``per_bit`` (arrays, for the detail file and plots)."""
    ma, mb = a.packets.nprint, b.packets.nprint
    # packet -> class index, per side; classes missing on one side are excluded from per-class rows
    flow_class_a = _class_ids(a.label, classes)
    flow_class_b = _class_ids(b.label, classes)
    ga = np.repeat(flow_class_a, a.lengths)
    gb = np.repeat(flow_class_b, b.lengths)
    shared = np.zeros(len(classes), dtype=bool)
    shared[np.unique(flow_class_a[flow_class_a >= 0])] = True
    in_b = np.zeros(len(classes), dtype=bool)
    in_b[np.unique(flow_class_b[flow_class_b >= 0])] = True
    shared &= in_b
    n_cls = len(classes)

    per_field: dict[str, dict[str, float]] = {}
    per_field_class: dict[str, dict[str, dict[str, float]]] = {}
    observed: list[str] = []
    # per field, the classes in which it is present in at least one packet of either side: a
    # class's mean runs over these only (a field absent from the class on both sides would add
    # a free zero, and the class's number would depend on which other classes are compared)
    observed_in_class: dict[str, np.ndarray] = {}

    def class_presence(rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        pa = np.bincount(ga[ga >= 0], weights=rows_a[ga >= 0], minlength=n_cls) > 0
        pb = np.bincount(gb[gb >= 0], weights=rows_b[gb >= 0], minlength=n_cls) > 0
        return pa | pb

    def add(key: str, ka: np.ndarray, kb: np.ndarray, present: bool) -> None:
        ca, cb, n_cat = category_codes(ka, kb)
        d = distances(np.bincount(ca, minlength=n_cat), np.bincount(cb, minlength=n_cat))
        per_field[key] = {m: float(d[m]) for m in METRICS} | {"categories": n_cat}
        if present:
            observed.append(key)
        ha = grouped_counts(ca[ga >= 0], ga[ga >= 0], n_cls, n_cat)
        hb = grouped_counts(cb[gb >= 0], gb[gb >= 0], n_cls, n_cat)
        dc = distances(ha, hb)
        per_field_class[key] = {
            classes[i]: {m: float(dc[m][i]) for m in METRICS} for i in range(n_cls) if shared[i]
        }

    for field in layout.fields:
        sl = layout.field_slice(field)
        rows_a, rows_b = (ma[:, sl] != ABSENT).any(axis=1), (mb[:, sl] != ABSENT).any(axis=1)
        present = bool(rows_a.any() or rows_b.any())
        observed_in_class[field.key] = class_presence(rows_a, rows_b)
        add(field.key, layout.field_keys(ma, field), layout.field_keys(mb, field), present)
    pa, pb = protocol_values(layout, ma), protocol_values(layout, mb)
    add(PROTOCOL_FIELD, pa, pb, False)  # reported on its own, not part of the field average

    field_keys = [f.key for f in layout.fields]
    observed_fields = [k for k in observed if k in field_keys]

    # per bit: three categories (-1 / 0 / 1) per column, all columns at once
    def bit_counts(m: np.ndarray) -> np.ndarray:
        return np.stack([(m == v).sum(axis=0) for v in (ABSENT, 0, 1)], axis=-1)

    bits = distances(bit_counts(ma), bit_counts(mb))
    bit_observed = ((ma != ABSENT).any(axis=0) | (mb != ABSENT).any(axis=0))

    per_class: dict[str, dict[str, float]] = {}
    for i, cls in enumerate(classes):
        if not shared[i]:
            continue
        class_fields = [k for k in observed_fields if observed_in_class[k][i]]
        rows = {k: per_field_class[k][cls] for k in class_fields}
        per_class[cls] = _means(rows, class_fields) | {
            "protocol_" + m: per_field_class[PROTOCOL_FIELD][cls][m] for m in METRICS
        }

    overall = _means(per_field, observed_fields)
    overall["fields"] = len(observed_fields)
    overall["protocol"] = {m: per_field[PROTOCOL_FIELD][m] for m in METRICS}
    overall["bits"] = {
        m: float(np.nanmean(bits[m][bit_observed])) if bit_observed.any() else float("nan") for m in METRICS
    }
    overall["packets"] = [int(ma.shape[0]), int(mb.shape[0])]
    return {
        "overall": overall,
        "per_field": per_field,
        "per_class": per_class,
        "per_field_class": per_field_class,
        "observed_fields": observed_fields,
        "per_bit": {m: bits[m].tolist() for m in METRICS} | {"observed": bit_observed.tolist()},
    }
