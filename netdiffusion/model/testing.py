"""Small synthetic datasets for tests and fixtures, built from the field table.

Real captures are the ground truth (tests use ``shared_data``); these exist so model tests can
run before/without the encoder and so a broken encoder does not mask model bugs. Flows are
structurally realistic: fixed per-flow addresses and ports, IPv4 + TCP (with options) or UDP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netdiffusion.dataset import Packets, write_fields, write_shard
from netdiffusion.fields import HEADERS, IP_PROTO, Layout


def synthetic_flow(layout: Layout, proto: str, packets: int, rng: np.random.Generator) -> np.ndarray:
    """One flow's nPrint matrix: IPv4 + ``proto`` (tcp or udp), endpoints fixed per flow."""
    m = layout.empty(packets)
    ip = np.zeros((packets, HEADERS["ipv4"].bytes), dtype=np.uint8)
    ip[:, 0] = 0x45
    payload = rng.integers(0, 1400, packets)
    l4_len = 32 if proto == "tcp" else 8
    total = 20 + l4_len + payload
    ip[:, 2], ip[:, 3] = total >> 8, total & 0xFF
    ip[:, 6] = 0x40
    ip[:, 8] = 64
    ip[:, 9] = IP_PROTO[proto]
    a, b = rng.integers(0, 256, 4, dtype=np.uint8), rng.integers(0, 256, 4, dtype=np.uint8)
    reply = rng.random(packets) < 0.4
    reply[0] = False
    ip[:, 12:16] = np.where(reply[:, None], b, a)
    ip[:, 16:20] = np.where(reply[:, None], a, b)
    m[:, layout.header_slice("ipv4")] = layout.header_bits_from_bytes("ipv4", ip, np.full(packets, 20))
    l4 = np.zeros((packets, HEADERS[proto].bytes), dtype=np.uint8)
    sport, dport = int(rng.integers(1024, 65535)), 443
    ports = np.where(reply[:, None], [dport >> 8, dport & 0xFF, sport >> 8, sport & 0xFF],
                     [sport >> 8, sport & 0xFF, dport >> 8, dport & 0xFF])
    l4[:, 0:4] = ports
    if proto == "tcp":
        l4[:, 4:8] = rng.integers(0, 256, 4, dtype=np.uint8)
        l4[:, 12] = 0x80
        l4[:, 13] = 0x10
        l4[0, 13] = 0x02
        l4[:, 20:32] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
    else:
        l4[:, 4], l4[:, 5] = (8 + payload) >> 8, (8 + payload) & 0xFF
    m[:, layout.header_slice(proto)] = layout.header_bits_from_bytes(proto, l4, np.full(packets, l4_len))
    return m


def write_synthetic_dataset(path: str | Path, *, classes: dict[str, str] | None = None, flows: int = 6,
                            packets: tuple[int, int] = (8, 40), seed: int = 0) -> Path:
    """A dataset directory with ``flows`` flows per class; ``classes`` maps label -> tcp|udp."""
    classes = classes or {"alpha": "tcp", "beta": "udp"}
    rng = np.random.default_rng(seed)
    layout = Layout()
    parts = []
    for label, proto in classes.items():
        for i in range(flows):
            n = int(rng.integers(packets[0], packets[1] + 1))
            m = synthetic_flow(layout, proto, n, rng)
            direction = (layout.field_keys(m, "ipv4_src") != layout.field_keys(m, "ipv4_src")[0]).astype(np.int8)
            parts.append(Packets(
                flow_id=np.full(n, f"{label}-{i}", dtype=object), label=np.full(n, label, dtype=object),
                macro=np.full(n, "test", dtype=object), packet_index=np.arange(n, dtype=np.int32),
                timestamp=np.cumsum(rng.integers(1_000, 5_000_000, n)) - 1_000, direction=direction,
                wire_length=(layout.field_values(m, "ipv4_tl") + 14).astype(np.int32),
                source=np.full(n, "synthetic", dtype=object), frame=np.arange(1, n + 1, dtype=np.int64), nprint=m))
    path = Path(path)
    write_shard(Packets.concat(parts), path / "part-0.parquet")
    write_fields(path, layout)
    return path
