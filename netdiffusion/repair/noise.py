"""Noise for testing repair: corrupt real rows or draw uniformly random ones.

Used by the acceptance tests and the benchmark (and handy for checking a custom rule set): the
NetDiffusion failure modes are bits that take the wrong one of {-1, 0, 1}."""

from __future__ import annotations

import numpy as np

from netdiffusion.dataset import Packets
from netdiffusion.fields import Layout


def corrupt(packets: Packets, rate: float, seed: int = 0) -> Packets:
    """Replace a share ``rate`` of all bits with one of the two other values of {-1, 0, 1}."""
    rng = np.random.default_rng(seed)
    m = packets.nprint.copy()
    hit = rng.random(m.shape) < rate
    shift = rng.integers(1, 3, size=m.shape)
    m[hit] = (m[hit] + 1 + shift[hit]) % 3 - 1
    return Packets(**{**packets.__dict__, "nprint": m})


def random_packets(layout: Layout, flows: int, packets: int, seed: int = 0, label: str = "random") -> Packets:
    """``flows`` flows of ``packets`` rows of uniformly random bits (timestamps all zero)."""
    rng = np.random.default_rng(seed)
    n = flows * packets
    return Packets(
        flow_id=np.repeat([f"{label}-{i:03d}" for i in range(flows)], packets).astype(object),
        label=np.full(n, label, dtype=object), macro=np.full(n, "", dtype=object),
        packet_index=np.tile(np.arange(packets), flows).astype(np.int32),
        timestamp=np.zeros(n, np.int64), direction=np.zeros(n, np.int8), wire_length=np.zeros(n, np.int32),
        source=np.full(n, "random", dtype=object), frame=np.zeros(n, np.int64),
        nprint=rng.integers(-1, 2, size=(n, layout.width)).astype(np.int8))
