"""pcap writing, Ethernet wrapping and nPrint rows -> IP packets (packets.build_ip_packets)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from netdiffusion.fields import DEFAULT_LAYOUT, HEADERS, Layout
from netdiffusion.packets import build_ip_packets
from netdiffusion.pcap.parse import parse_batch
from netdiffusion.pcap.reader import iter_records
from netdiffusion.pcap.writer import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    MAC_INITIATOR,
    MAC_RESPONDER,
    ethernet_frames,
    write_pcap,
)

PACKETS = [
    bytes(IP(src="10.0.0.1", dst="10.0.0.2", ttl=9) / TCP(sport=1, dport=2, options=[("MSS", 1400), ("SAckOK", b"")])
          / (b"\x00" * 10)),
    bytes(IPv6(src="::1", dst="::2") / UDP(sport=3, dport=4) / (b"\x00" * 3)),
    bytes(IP(src="10.0.0.2", dst="10.0.0.1", options=b"\x01\x01\x01\x00") / ICMP(id=5) / (b"\x00" * 4)),
    bytes(IP(src="10.0.0.2", dst="10.0.0.1", proto=47) / (b"\x00" * 6)),  # no transport header
]


def encode_rows(layout: Layout, packets: list[bytes]) -> np.ndarray:
    """nPrint rows of raw IP packets through the real reader/parser (a raw-IP capture in memory)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.pcap"
        write_pcap(path, packets, np.arange(len(packets)), LINKTYPE_RAW)
        batch = next(iter_records(path))
    p = parse_batch(batch)
    m = layout.empty(len(packets))
    for h, kind, code, window, lengths in (("ipv4", p.l3, 0, p.l3_bytes, p.l3_len), ("ipv6", p.l3, 1, p.l3_bytes,
                                           p.l3_len), ("tcp", p.l4, 0, p.l4_bytes, p.l4_len),
                                          ("udp", p.l4, 1, p.l4_bytes, p.l4_len), ("icmp", p.l4, 2, p.l4_bytes,
                                                                                    p.l4_len)):
        m[:, layout.header_slice(h)] = layout.header_bits_from_bytes(h, window, np.where(kind == code, lengths, 0))
    return m


def test_write_pcap_nanoseconds_read_back_and_by_tshark(tmp_path: Path) -> None:
    ts = np.array([1_700_000_000_000_000_001, 1_700_000_000_500_000_002, 1_700_000_001_000_000_003, 1_700_000_002])
    frames = ethernet_frames(PACKETS, np.array([0, 1, 0, 1]))
    path = tmp_path / "out.pcap"
    write_pcap(path, frames, ts)
    assert path.read_bytes()[:4] == bytes.fromhex("4d3cb2a1")  # 0xa1b23c4d little-endian
    batch = next(iter_records(path))
    assert batch.ts_ns.tolist() == ts.tolist() and batch.linktype.tolist() == [LINKTYPE_ETHERNET] * 4
    got = [batch.data[o:o + c].tobytes() for o, c in zip(batch.offset, batch.caplen, strict=True)]
    assert got == frames
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "eth.type",
                          "-e", "eth.src"], capture_output=True, text=True, check=True).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert [r[0] for r in rows] == ["1700000000.000000001", "1700000000.500000002", "1700000001.000000003",
                                    "1.700000002"]
    assert [r[1] for r in rows] == ["0x0800", "0x86dd", "0x0800", "0x0800"]
    assert rows[0][2] == ":".join(f"{b:02x}" for b in MAC_INITIATOR)
    assert rows[1][2] == ":".join(f"{b:02x}" for b in MAC_RESPONDER)


def test_write_pcap_snaplen_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    write_pcap(path, [b"\x45" + b"\x00" * 99], np.array([5]), LINKTYPE_RAW, snaplen=40)
    batch = next(iter_records(path))
    assert batch.caplen.tolist() == [40] and batch.wirelen.tolist() == [100]
    with pytest.raises(ValueError):
        write_pcap(path, [b"x"], np.array([1, 2]))


def test_build_ip_packets_reproduces_headers_and_lengths() -> None:
    layout = DEFAULT_LAYOUT
    rows = encode_rows(layout, PACKETS)
    built = build_ip_packets(layout, rows)
    # payloads in PACKETS are zero bytes, so the whole packet must come back identical
    assert built == PACKETS
    rng = np.random.default_rng(0)
    rand = build_ip_packets(layout, rows, payload="random", rng=rng)
    assert [len(p) for p in rand] == [len(p) for p in PACKETS]
    assert rand[0][:48] == PACKETS[0][:48]  # headers kept (20 + 28 bytes), payload random
    assert rand[0][48:] != PACKETS[0][48:]
    explicit = build_ip_packets(layout, rows, payload_lengths=np.array([0, 1, 2, 3]))
    assert [len(p) for p in explicit] == [20 + 28, 40 + 8 + 1, 24 + 8 + 2, 20 + 3]


def test_build_ip_packets_layout_subsets_and_empty_rows() -> None:
    layout = Layout(["ipv4", "tcp"])
    rows = encode_rows(Layout(), PACKETS[:1])
    sub = np.concatenate([rows[:, Layout().header_slice("ipv4")], rows[:, Layout().header_slice("tcp")]], axis=1)
    assert build_ip_packets(layout, sub) == PACKETS[:1]
    assert build_ip_packets(layout, layout.empty(2)) == [b"", b""]
    assert build_ip_packets(layout, layout.empty(0)) == []
    assert layout.width == HEADERS["ipv4"].bits + HEADERS["tcp"].bits
