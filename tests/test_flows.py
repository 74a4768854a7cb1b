"""Flow keys: direction-free, byte layout for nDPI matching, exact grouping even on hash collisions."""

from __future__ import annotations

import numpy as np

import netdiffusion.flows as flows
from netdiffusion.flows import KEY_BYTES, FlowTable, canonical_keys


def _v4(addr: str) -> np.ndarray:
    out = np.zeros(16, dtype=np.uint8)
    out[12:] = [int(x) for x in addr.split(".")]
    return out


def _packets(rng: np.random.Generator, n: int):
    hosts = np.stack([_v4(f"10.0.0.{i}") for i in range(1, 6)])
    a, b = rng.integers(0, 5, n), rng.integers(0, 5, n)
    ports = rng.choice([80, 443, 5353], n), rng.choice([80, 443, 5353], n)
    return np.full(n, 6), hosts[a], ports[0], hosts[b], ports[1]


def test_keys_are_direction_free_and_laid_out_for_ndpi() -> None:
    proto, src, sport, dst, dport = (np.array([6, 6]), np.stack([_v4("10.0.0.2"), _v4("10.0.0.1")]),
                                     np.array([443, 5000]), np.stack([_v4("10.0.0.1"), _v4("10.0.0.2")]),
                                     np.array([5000, 443]))
    keys, src_low = canonical_keys(proto, src, sport, dst, dport)
    assert src_low.tolist() == [False, True]
    k0, k1 = keys.key_bytes(np.array([0, 1]))
    assert k0 == k1 and len(k0) == KEY_BYTES
    expected = (bytes([6]) + bytes(_v4("10.0.0.1")) + (5000).to_bytes(2, "big") + bytes(_v4("10.0.0.2"))
                + (443).to_bytes(2, "big") + b"\x00\x00")
    assert k0 == expected


def test_grouping_is_exact_when_every_hash_collides(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    args = _packets(rng, 500)
    ts = np.arange(500, dtype=np.int64) * 1000
    normal = FlowTable().assign(*canonical_keys(*args), ts, None)
    monkeypatch.setattr(flows, "_HASH_MULTIPLIERS", np.zeros(8, dtype=np.uint64))  # one hash for all
    collided_table = FlowTable()
    collided = collided_table.assign(*canonical_keys(*args), ts, None)
    for k in normal:
        assert np.array_equal(normal[k], collided[k]), k
    # flows numbered by first appearance, positions count each flow's packets in capture order
    assert collided["flow"][0] == 0 and len(collided_table.keys) == len(set(collided_table.keys)) > 1
    for f in np.unique(collided["flow"]):
        assert collided["position"][collided["flow"] == f].tolist() == list(range((collided["flow"] == f).sum()))
