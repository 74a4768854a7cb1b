"""Training data: a dataset too large to read at once gives the same flows, read a shard at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netdiffusion.dataset as dataset_module
from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard
from netdiffusion.model.data import load_flows


@pytest.mark.parametrize(("cap", "packets"), [(10, 1024), (4, 16)])
def test_a_large_dataset_is_read_twice_a_shard_at_a_time_with_the_same_flows(
        small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int, packets: int) -> None:
    packets_all = read_packets(small_dataset)
    data = tmp_path / "data"
    write_fields(data, read_layout(small_dataset))
    for i, rows in enumerate(np.array_split(np.random.default_rng(0).permutation(len(packets_all)), 4)):
        write_shard(packets_all.take(rows), data / f"part-{i}.parquet")  # flows spread over every shard
    at_once = load_flows(data, packets=packets, max_flows_per_class=cap, seed=3)
    monkeypatch.setattr(dataset_module, "READ_ONCE_BYTES", 0)
    streamed = load_flows(data, packets=packets, max_flows_per_class=cap, seed=3)
    assert streamed.classes == at_once.classes and streamed.macros == at_once.macros
    for key in ("bits", "offsets", "class_index", "timestamp", "direction"):
        assert np.array_equal(getattr(streamed, key), getattr(at_once, key)), key
    counts = np.bincount(at_once.class_index)
    assert counts.max() == cap and len(at_once) < len(np.unique(packets_all.flow_id))
    assert at_once.lengths.max() <= packets


def test_a_flow_with_a_broken_clock_adds_no_inter_arrival_time() -> None:
    """Regression (QA on tcpdump 4.99's fuzzed captures, session 24): a flow whose packets lie
    9.2e18 ns after its first (or before it) made inter-arrival gaps that wrapped around int64;
    they became the class's top quantile, and generated flows drew times centuries apart. Such a
    flow now adds no inter-arrival time; the class's other flows set its timing."""
    from netdiffusion.fields import Layout
    from netdiffusion.model.data import FlowSet, timing_stats

    layout = Layout()
    good = np.arange(5, dtype=np.int64) * 1_000
    broken = np.array([0, 9_218_641_673_709_799_066, 0, -6_797_031_349_329_019_464, 5], dtype=np.int64)
    flows = FlowSet(layout=layout, classes=["a"], macros={}, bits=np.zeros((15, layout.width), dtype=np.int8),
                    offsets=np.array([0, 5, 10, 15]), class_index=np.zeros(3, dtype=np.int64),
                    timestamp=np.concatenate([good, broken, good]), direction=np.zeros(15, dtype=np.int8))
    stats = timing_stats(flows)["a"]
    assert stats["iat_ns_quantiles"][0] == stats["iat_ns_quantiles"][-1] == 1_000
    assert stats["iat_ns_mean"] == 1_000.0 and stats["flows"] == 3
