"""Flow-level traffic statistics, real vs synthetic (paper Table 11), compared by TVD.

Every statistic is read from the nPrint bits through the field table (never from offsets), so it
measures what the generator produced. Continuous quantities are binned on fixed edges shared by
both sides; categorical ones (protocol, flag combinations, TTL, ports) use their values.
TCP/UDP checksums cover the payload, which nPrint does not keep, so only the IPv4 header checksum
can be verified from the bits; it is recomputed from ``Layout.header_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from netdiffusion.evaluate.data import FlowSet
from netdiffusion.evaluate.metrics import histogram_tvd, sample_distances
from netdiffusion.evaluate.similarity import protocol_values
from netdiffusion.fields import Layout

TCP_FLAGS: tuple[str, ...] = ("ns", "cwr", "ece", "urg", "ackf", "psh", "rst", "syn", "fin")

# fixed bin edges so numbers are comparable across runs
PACKET_SIZE_BINS = np.array([0, 41, 53, 65, 129, 257, 513, 1025, 1281, 1401, 1501, 65536], dtype=np.float64)
WINDOW_BINS = np.r_[0.0, 2.0 ** np.arange(0, 17)]
IAT_BINS_US = np.r_[0.0, 10.0 ** np.arange(0, 9.5, 0.5)]  # 1 us .. ~30 min, log-spaced
COUNT_BINS = np.r_[0.0, 2.0 ** np.arange(0, 21)]


@dataclass
class Stat:
    """One statistic's sample: values, the class index of each value, and how to compare."""

    values: np.ndarray
    groups: np.ndarray  # class index per value (-1 unknown)
    bins: np.ndarray | None  # None = categorical


def ipv4_checksum_ok(layout: Layout, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(checkable, ok)`` per packet: IPv4 header checksum recomputed over the header bytes."""
    n = matrix.shape[0]
    if "ipv4" not in layout.headers:
        return np.zeros(n, bool), np.zeros(n, bool)
    data, lengths = layout.header_bytes(matrix, "ipv4")
    hl_words = layout.field_values(matrix, "ipv4_hl")  # header length in 32-bit words
    hl_bytes = hl_words * 4
    checkable = (hl_words >= 5) & (lengths >= hl_bytes)
    words = data[:, 0::2].astype(np.int64) << 8 | data[:, 1::2].astype(np.int64)
    index = np.arange(words.shape[1])[None, :]
    total = np.where(index < (hl_bytes[:, None] // 2), words, 0).sum(axis=1)
    while (total >> 16).any():
        total = (total & 0xFFFF) + (total >> 16)
    return checkable, checkable & (total == 0xFFFF)


def _per_packet(fs: FlowSet, name: str) -> np.ndarray:
    return np.repeat(getattr(fs, name), fs.lengths)


def collect(fs: FlowSet, layout: Layout, classes: list[str]) -> dict[str, Stat]:
    """All statistics of one flow set (already cut to the compared packets per flow)."""
    m = fs.packets.nprint
    lookup = {c: i for i, c in enumerate(classes)}
    flow_group = np.array([lookup.get(x, -1) for x in fs.label], dtype=np.int64)
    pkt_group = np.repeat(flow_group, fs.lengths)
    stats: dict[str, Stat] = {}

    proto = protocol_values(layout, m)
    stats["protocol"] = Stat(proto, pkt_group, None)

    ip_len = np.full(m.shape[0], -1, dtype=np.int64)
    ttl = np.full(m.shape[0], -1, dtype=np.int64)
    if "ipv6" in layout.headers:
        v6 = layout.field_values(m, "ipv6_len")
        ip_len = np.where(v6 >= 0, v6 + 40, ip_len)
        ttl = np.where(v6 >= 0, layout.field_values(m, "ipv6_hl"), ttl)
    if "ipv4" in layout.headers:
        v4 = layout.field_values(m, "ipv4_tl")
        ip_len = np.where(v4 >= 0, v4, ip_len)
        ttl = np.where(v4 >= 0, layout.field_values(m, "ipv4_ttl"), ttl)
    has_ip = ip_len >= 0
    stats["packet_size"] = Stat(ip_len[has_ip], pkt_group[has_ip], PACKET_SIZE_BINS)
    stats["ttl"] = Stat(ttl[has_ip], pkt_group[has_ip], None)

    flow_of = fs.packet_flow()
    stats["packets_per_flow"] = Stat(fs.lengths.astype(np.float64), flow_group, COUNT_BINS)
    flow_bytes = np.bincount(flow_of[has_ip], weights=ip_len[has_ip], minlength=len(fs))
    stats["bytes_per_flow"] = Stat(flow_bytes, flow_group, COUNT_BINS)

    ports = np.full(m.shape[0], -1, dtype=np.int64)
    for header, sport, dport in (("udp", "udp_sport", "udp_dport"), ("tcp", "tcp_sprt", "tcp_dprt")):
        if header in layout.headers:
            s, d = layout.field_values(m, sport), layout.field_values(m, dport)
            both = (s >= 0) & (d >= 0)
            ports = np.where(both, np.minimum(s, d), ports)  # the well-known side of the pair
    stats["service_port"] = Stat(ports[ports >= 0], pkt_group[ports >= 0], None)

    if "tcp" in layout.headers:
        flag_bits = np.stack([layout.field_values(m, f"tcp_{f}") for f in TCP_FLAGS], axis=1)
        is_tcp = (flag_bits >= 0).all(axis=1)
        combo = (flag_bits.clip(0, 1) * (1 << np.arange(len(TCP_FLAGS) - 1, -1, -1))).sum(axis=1)
        stats["tcp_flags"] = Stat(combo[is_tcp], pkt_group[is_tcp], None)
        window = layout.field_values(m, "tcp_wsize")
        stats["tcp_window"] = Stat(window[is_tcp].astype(np.float64), pkt_group[is_tcp], WINDOW_BINS)
        for flag in ("syn", "fin", "rst", "ackf", "psh"):
            idx = TCP_FLAGS.index(flag)
            stats[f"tcp_{flag}_share"] = Stat(flag_bits[is_tcp, idx].clip(0, 1), pkt_group[is_tcp], None)

    ts = fs.packets.timestamp.astype(np.int64)
    pos = fs.packet_position()
    later = pos > 0
    iat_us = (ts[later] - ts[np.flatnonzero(later) - 1]) / 1000.0
    stats["inter_arrival_us"] = Stat(np.clip(iat_us, 0, None), pkt_group[later], IAT_BINS_US)

    checkable, ok = ipv4_checksum_ok(layout, m)
    stats["ipv4_checksum_error"] = Stat((~ok[checkable]).astype(np.int64), pkt_group[checkable], None)
    if "ipv4" in layout.headers:
        mf = layout.field_values(m, "ipv4_mfbit")
        foff = layout.field_values(m, "ipv4_foff")
        v4 = mf >= 0
        stats["ipv4_fragment"] = Stat(((mf == 1) | (foff > 0))[v4].astype(np.int64), pkt_group[v4], None)
    return stats


def _tvd(a: Stat, b: Stat, ga: np.ndarray | None = None, gb: np.ndarray | None = None) -> float:
    va = a.values if ga is None else a.values[ga]
    vb = b.values if gb is None else b.values[gb]
    if a.bins is not None:
        return histogram_tvd(va, vb, a.bins)
    return sample_distances(va, vb)["tvd"]


def _summary(s: Stat) -> dict[str, float]:
    """Mean and median; categorical statistics (protocol, ports, flags, TTL) also get their mode,
    since the mean of protocol numbers or flag combinations means little."""
    v = np.asarray(s.values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan")}
    out = {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v))}
    if s.bins is None:
        values, counts = np.unique(s.values, return_counts=True)
        if not np.isin(values, (0, 1)).all():
            out["mode"] = int(values[np.argmax(counts)])
            out["mode_share"] = float(counts.max() / v.size)
    return out


def compare(a: dict[str, Stat], b: dict[str, Stat], classes: list[str]) -> dict:
    """TVD per statistic overall and per class, plus summaries of both sides."""
    names = [k for k in a if k in b]
    out: dict = {"tvd": {}, "real": {}, "synthetic": {}, "per_class_tvd": {}}
    for name in names:
        out["tvd"][name] = _tvd(a[name], b[name])
        out["real"][name] = _summary(a[name])
        out["synthetic"][name] = _summary(b[name])
    for i, cls in enumerate(classes):
        row = {}
        for name in names:
            ma, mb = a[name].groups == i, b[name].groups == i
            if ma.any() and mb.any():
                row[name] = _tvd(a[name], b[name], ma, mb)
        if row:
            out["per_class_tvd"][cls] = row
    tvds = np.array([v for v in out["tvd"].values() if not np.isnan(v)])
    out["mean_tvd"] = float(tvds.mean()) if tvds.size else float("nan")
    return out


def flag_counts_per_1024(stats: dict[str, Stat]) -> dict[str, float]:
    """SYN/FIN/... packets per 1,024 TCP packets, the unit the paper quotes (SYN 68, FIN 556)."""
    return {
        flag: float(stats[f"tcp_{flag}_share"].values.mean() * 1024) if stats[f"tcp_{flag}_share"].values.size
        else float("nan")
        for flag in ("syn", "fin", "rst", "ackf", "psh") if f"tcp_{flag}_share" in stats
    }
