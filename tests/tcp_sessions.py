"""A TCP conversation of several connections on the same ports, as real clients make them.

A client that binds its port (or gets it again) opens a new connection once the last one closed:
both sides sent a FIN, or one an RST. tshark reads its SYN as "a new tcp session is started with
the same ports". Built with scapy, checksums and numbers as a real stack writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLIENT, SERVER = ("172.16.5.2", 5678), ("172.16.5.92", 9999)


def session_packets(isn_c: int, isn_s: int, t0: float, close: str = "fin", request: int = 28) -> list:
    """One connection: handshake (MSS, SACK-permitted, window scale, timestamps on the SYN),
    ``request`` bytes from the client, then ``close``: ``fin`` (both sides, last ACK) or ``rst``
    (the client resets), or ``none`` (it just stops)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    def pkt(src: tuple, dst: tuple, flags: str, seq: int, ack: int, data: bytes = b"", options=None):
        return (Ether() / IP(src=src[0], dst=dst[0], ttl=64)
                / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq % 2**32, ack=ack % 2**32, window=64240,
                      options=options or []) / Raw(data))

    c, s = isn_c, isn_s
    out = [pkt(CLIENT, SERVER, "S", c, 0, options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]),
           pkt(SERVER, CLIENT, "SA", s, c + 1, options=[("MSS", 1460), ("NOP", None), ("NOP", None),
                                                        ("SAckOK", b""), ("NOP", None), ("WScale", 7)]),
           pkt(CLIENT, SERVER, "A", c + 1, s + 1),
           pkt(CLIENT, SERVER, "PA", c + 1, s + 1, b"x" * request),
           pkt(SERVER, CLIENT, "A", s + 1, c + 1 + request)]
    c += 1 + request
    s += 1
    if close == "fin":
        out += [pkt(CLIENT, SERVER, "FA", c, s), pkt(SERVER, CLIENT, "FA", s, c + 1), pkt(CLIENT, SERVER, "A", c + 1, s + 1)]
    elif close == "rst":
        out += [pkt(CLIENT, SERVER, "RA", c, s)]
    for i, p in enumerate(out):
        p.time = t0 + 0.01 * i
    return out


def syn_resent_after_syn_ack(path: Path, first_ack: int = 1_000_001) -> Path:
    """One connection whose client resends its SYN (same number) after the server's SYN-ACK got
    lost on the way back; the server answers the repeat with its SYN-ACK again. ``first_ack``:
    the first SYN-ACK's acknowledgement number (the SYN's + 1; another value as a corrupted one)."""
    from scapy.layers.inet import TCP
    from scapy.utils import wrpcap

    packets = session_packets(1_000_000, 500_000, 1_700_000_000, "fin")
    packets = packets[:2] + [packets[0].copy(), packets[1].copy()] + packets[2:]
    packets[1][TCP].ack = first_ack
    del packets[1][TCP].chksum
    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + 0.2 * i
    wrpcap(str(path), packets)
    return path


def write_sessions(path: Path, closes: list[str]) -> Path:
    """One pcap: a connection per entry of ``closes`` (its close), ports reused, new ISNs each."""
    from scapy.utils import wrpcap

    packets = []
    for k, close in enumerate(closes):
        packets += session_packets(1_000_000 + 7_654_321 * k, 500_000 + 1_234_567 * k, 1_700_000_000 + 5 * k, close)
    wrpcap(str(path), packets)
    return path


def tcp_packet(src: tuple, dst: tuple, flags: str, seq: int, ack: int, size: int = 0, options: list | None = None):
    """One Ethernet/IPv4/TCP packet from ``src`` to ``dst`` ((address, port) pairs), ``size``
    payload bytes, checksums as a real stack writes them."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    return (Ether() / IP(src=src[0], dst=dst[0], ttl=64)
            / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq % 2**32, ack=ack % 2**32, window=64240,
                  options=options or []) / Raw(b"x" * size))


def repaired_capture(folder: Path, packets: list, gap: float = 0.05) -> tuple[dict, np.ndarray, object]:
    """``packets`` (``gap`` seconds apart) written as one capture under ``folder``, encoded and
    repaired (pcaps in ``folder/pcaps``, rows in ``folder/out``). Returns the flow's bits changed
    by rule (L4 checksums aside: the payload bytes are repair's), its repaired rows in packet
    order and the layout."""
    from scapy.utils import wrpcap

    from netdiffusion.dataset import read_layout, read_packets
    from netdiffusion.encode import encode_paths
    from netdiffusion.repair import repair_dataset

    for i, p in enumerate(packets):
        p.time = 1_700_000_000 + gap * i
    (folder / "cap").mkdir(parents=True)
    wrpcap(str(folder / "cap" / "flow.pcap"), packets)
    encode_paths([folder / "cap"], folder / "enc", progress=False)
    repair_dataset(folder / "enc", folder / "pcaps", progress=False, dataset_output=folder / "out")
    report = json.loads((folder / "pcaps" / "repair_report.json").read_text())
    changed = {k: v for k, v in report["flows"][0]["bits_changed"].items() if k != "l4_checksum"}
    out = read_packets(folder / "out")
    return changed, out.nprint[np.argsort(out.packet_index)], read_layout(folder / "out")
