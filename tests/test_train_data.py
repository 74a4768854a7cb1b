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
