"""Per-class similarity averages over the fields present in that class only.

A field absent from a class on both sides (UDP fields in a TCP class) would add a free zero to the
class's mean, and the class's number would then depend on which other classes are compared."""

from __future__ import annotations

import numpy as np

from netdiffusion.evaluate.data import FlowSet
from netdiffusion.evaluate.similarity import compare
from netdiffusion.fields import ABSENT
from tests.test_evaluate import LAYOUT, build_packets, flip_bits


def _udp_reddit(packets):
    """reddit flows become UDP: TCP header absent, UDP fields set."""
    rows = packets.label == "reddit"
    m = packets.nprint
    m[rows, LAYOUT.header_slice("tcp")] = ABSENT
    n = int(rows.sum())
    for name, value in (("sport", 5353), ("dport", 53), ("len", 40), ("cksum", 0)):
        sub = LAYOUT.empty(n)
        LAYOUT.set_field(sub, f"udp_{name}", np.full(n, value))
        sl = LAYOUT.field_slice(f"udp_{name}")
        m[rows, sl] = sub[:, sl]
    return packets


def test_per_class_jsd_does_not_depend_on_other_classes():
    real = _udp_reddit(build_packets(2, flows_per_class=8, sources=2, prefix="r"))
    syn = flip_bits(real, 0.05, seed=3)
    fa, fb = FlowSet.from_packets(real), FlowSet.from_packets(syn)
    everything = compare(fa, fb, LAYOUT, ["netflix", "reddit", "zoom"])
    tcp_only = ["netflix", "zoom"]
    alone = compare(fa.subset(np.isin(fa.label, tcp_only)), fb.subset(np.isin(fb.label, tcp_only)), LAYOUT, tcp_only)
    assert "udp_sport" in everything["observed_fields"] and "udp_sport" not in alone["observed_fields"]
    for cls in tcp_only:
        for m in ("jsd", "tvd", "hd"):
            assert np.isclose(everything["per_class"][cls][m], alone["per_class"][cls][m]), (cls, m)
    # and the UDP class is not diluted by the TCP fields it does not have
    udp_fields = [k for k in everything["observed_fields"] if not k.startswith("tcp_")]
    expected = np.mean([everything["per_field_class"][k]["reddit"]["jsd"] for k in udp_fields])
    assert np.isclose(everything["per_class"]["reddit"]["jsd"], expected)
