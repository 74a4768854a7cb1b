"""Quick, pre-repair quality checks of generated flows against real ones (per class).

The full evaluation (JSD/TVD/HD per field, ML utility) is ``netdiffusion evaluate``; this module
answers the model's own acceptance questions fast: does each class populate the same headers
(protocol mix), how close are a few key field distributions (total variation distance), and are
endpoints consistent within a flow. ``python -m netdiffusion.model.quality REAL GENERATED``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.model.generate import protocol_mix

KEY_FIELDS = ("ipv4_ttl", "ipv4_proto", "ipv4_tl", "ipv6_nh", "ipv6_hl", "tcp_dprt", "tcp_sprt", "tcp_wsize",
              "tcp_doff", "tcp_syn", "tcp_ackf", "tcp_psh", "tcp_fin", "udp_dport", "udp_sport", "udp_len")


def tvd(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between the empirical distributions of two value arrays."""
    if not len(a) or not len(b):
        return float("nan")
    values = np.union1d(a, b)
    pa = np.bincount(np.searchsorted(values, a), minlength=len(values)) / len(a)
    pb = np.bincount(np.searchsorted(values, b), minlength=len(values)) / len(b)
    return float(0.5 * np.abs(pa - pb).sum())


def endpoint_consistency(pk, layout) -> float:
    """Share of flows whose IPv4/IPv6 packets use at most two distinct source addresses."""
    ok, total = 0, 0
    for _, flow in pk.flows():
        for header in ("ipv4", "ipv6"):
            if header not in layout.headers:
                continue
            present = layout.header_present(flow.nprint, header)
            if present.sum() < 2:
                continue
            keys = layout.field_keys(flow.nprint[present], f"{header}_src")
            total += 1
            ok += len(np.unique(keys)) <= 2
    return ok / total if total else float("nan")


def compare(real: str | Path, generated: str | Path) -> dict:
    layout = read_layout(real)
    r_all, g_all = read_packets(real), read_packets(generated)
    out: dict = {"classes": {}}
    for label in sorted(np.unique(g_all.label).tolist()):
        r, g = r_all.take(r_all.label == label), g_all.take(g_all.label == label)
        rm, gm = protocol_mix(r.nprint, layout), protocol_mix(g.nprint, layout)
        fields = {}
        for key in KEY_FIELDS:
            if key.split("_")[0] not in layout.headers:
                continue
            rv, gv = layout.field_values(r.nprint, key), layout.field_values(g.nprint, key)
            rv, gv = rv[rv >= 0], gv[gv >= 0]
            if len(rv) and len(gv):
                fields[key] = round(tvd(rv, gv), 4)
        out["classes"][label] = {
            "flows": int(len(np.unique(g.flow_id))),
            "protocol_mix_max_abs_diff_pp": round(100 * max(abs(rm[h] - gm[h]) for h in layout.headers), 2),
            "protocol_mix_real": {h: round(v, 4) for h, v in rm.items()},
            "protocol_mix_generated": {h: round(v, 4) for h, v in gm.items()},
            "field_tvd": fields,
            "mean_field_tvd": round(float(np.mean(list(fields.values()))), 4) if fields else None,
            "endpoint_consistency": round(endpoint_consistency(g, layout), 4),
        }
    per = out["classes"].values()
    out["worst_protocol_mix_diff_pp"] = max(c["protocol_mix_max_abs_diff_pp"] for c in per)
    out["mean_field_tvd"] = round(float(np.mean([c["mean_field_tvd"] for c in per if c["mean_field_tvd"] is not None])), 4)
    return out


if __name__ == "__main__":
    print(json.dumps(compare(sys.argv[1], sys.argv[2]), indent=2))
