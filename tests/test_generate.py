"""Generation on real captures: protocol mix per class matches the real flows (before repair)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.cli import main as cli_main
from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.model.generate import directions_from_bits, pick_templates, protocol_mix, wire_lengths
from netdiffusion.model.testing import synthetic_flow


@pytest.fixture(scope="module")
def real_model(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("real") / "model"
    rc = cli_main(["train", "--data", str(small_dataset), "--output", str(out), "--config", "tiny",
                   "--set", "training.steps=8", "--set", "data.templates_per_class=1000"])
    assert rc == 0
    return out


def test_protocol_mix_matches_real_per_class(real_model: Path, small_dataset: Path, tmp_path: Path) -> None:
    gen_dir = tmp_path / "gen"
    rc = cli_main(["generate", "--model", str(real_model), "--output", str(gen_dir), "--count", "20",
                   "--seed", "3", "--no-images"])
    assert rc == 0
    real, gen = read_packets(small_dataset), read_packets(gen_dir)
    layout = read_layout(small_dataset)
    meta = json.loads((real_model / "model.json").read_text())
    assert len(meta["classes"]) == 5
    worst = 0.0
    for label in meta["classes"]:
        r = protocol_mix(real.nprint[real.label == label], layout)
        g = protocol_mix(gen.nprint[gen.label == label], layout)
        for header in layout.headers:
            worst = max(worst, abs(r[header] - g[header]))
            assert abs(r[header] - g[header]) <= 0.05, (label, header, r, g)
        assert len(np.unique(gen.flow_id[gen.label == label])) == 20
    assert worst <= 0.05
    # metadata columns are filled from the model's timing and the generated bits
    assert (gen.wire_length > 0).mean() > 0.99
    assert set(np.unique(gen.direction)) <= {0, 1}
    assert (gen.timestamp >= 0).all()


def test_pick_templates_is_stratified() -> None:
    # 10 UDP flows of 2 packets, 10 TCP flows of 40 packets: 20 picks out of 20 take each once
    lengths = np.concatenate([np.tile([[160, 0, 0, 64, 0]], (2, 1))] * 10 + [np.tile([[160, 0, 160, 0, 0]], (40, 1))] * 10)
    offsets = np.r_[0, np.cumsum([2] * 10 + [40] * 10)]
    picks = pick_templates(lengths, offsets, 10, np.random.default_rng(0))
    assert (picks < 10).sum() == 5  # half UDP, half TCP
    assert sorted(pick_templates(lengths, offsets, 20, np.random.default_rng(1))) == list(range(20))


def test_stratified_flow_subset_keeps_header_mix() -> None:
    """A capped subset of a skewed class (many short TCP flows, few long UDP ones) keeps the
    class's packet-weighted header mix; independent random subsets of the same size do not."""
    from netdiffusion.model.data import stratified_flows

    rng = np.random.default_rng(5)
    sizes = np.r_[rng.integers(2, 60, 300), rng.integers(600, 1024, 12)]
    stacks = [[160, 0, 160, 0, 0]] * 300 + [[160, 0, 0, 64, 0]] * 12
    presence = np.concatenate([np.tile(np.array([s]) > 0, (n, 1)) for s, n in zip(stacks, sizes, strict=True)])
    offsets = np.r_[0, np.cumsum(sizes)]
    full = presence.mean(axis=0)

    def mix_error(idx: np.ndarray) -> float:
        rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
        return float(np.abs(presence[rows].mean(axis=0) - full).max())

    idx = stratified_flows(presence, offsets, 40, np.random.default_rng(0))
    assert len(idx) == len(np.unique(idx)) == 40
    assert mix_error(idx) < 0.03
    random_errors = [mix_error(np.random.default_rng(s).choice(len(sizes), 40, replace=False)) for s in range(20)]
    assert max(random_errors) > 0.05  # the test's class is skewed enough to need stratification
    np.testing.assert_array_equal(stratified_flows(presence, offsets, 400, np.random.default_rng(0)), np.arange(312))


def test_direction_and_wire_length_from_bits() -> None:
    from netdiffusion.fields import Layout

    layout = Layout()
    flow = synthetic_flow(layout, "tcp", 30, np.random.default_rng(4))
    src = layout.field_keys(flow, "ipv4_src")
    np.testing.assert_array_equal(directions_from_bits(flow, layout), (src != src[0]).astype(np.int8))
    flipped = flow.copy()
    flipped[:, layout.field_slice("ipv4_src").start] ^= 1  # one noisy address bit
    np.testing.assert_array_equal(directions_from_bits(flipped, layout), (src != src[0]).astype(np.int8))
    np.testing.assert_array_equal(wire_lengths(flow, layout), layout.field_values(flow, "ipv4_tl") + 14)


def test_a_class_larger_than_a_part_is_written_in_parts_with_the_same_rows(tiny_model: Path, tmp_path: Path) -> None:
    """Generation kept every flow of a class (and a mask per flow) in memory until one shard was
    written: COUNT=5000 flows of ~900 packets needed ~26 GB. A class with more rows than
    ``part_rows`` is written in parts as it is generated; the rows, ids and timestamps are those
    the one shard holds, and a later call replaces the parts (and stale images) of its seed."""
    from netdiffusion.model.generate import generate

    cls = json.loads((tiny_model / "model.json").read_text())["classes"][0]
    generate(tiny_model, tmp_path / "one", classes=[cls], count=6, seed=2)
    stats = generate(tiny_model, tmp_path / "parts", classes=[cls], count=6, seed=2, part_rows=20)
    one, parts = read_packets(tmp_path / "one"), read_packets(tmp_path / "parts")
    names = sorted(p.name for p in (tmp_path / "parts").glob("*.parquet"))
    assert len(names) > 1 and all("-s2-p" in n for n in names), names
    assert stats["per_class"][cls]["packets"] == len(one) == len(parts)
    a = np.lexsort((one.packet_index, one.flow_id.astype(str)))
    b = np.lexsort((parts.packet_index, parts.flow_id.astype(str)))
    for column in ("flow_id", "label", "macro", "packet_index", "timestamp", "direction", "wire_length", "nprint"):
        assert np.array_equal(getattr(one, column)[a], getattr(parts, column)[b]), column
    images = sorted(p.name for p in (tmp_path / "parts" / "images").rglob("*.png"))
    assert images == sorted(p.name for p in (tmp_path / "one" / "images").rglob("*.png")) and len(images) == 6
    generate(tiny_model, tmp_path / "parts", classes=[cls], count=3, seed=2)  # fits one shard again
    assert [p.name for p in (tmp_path / "parts").glob("*.parquet")] == [f"{names[0].split('-s2-')[0]}-s2.parquet"]
    assert len(list((tmp_path / "parts" / "images").rglob("*.png"))) == 3
    assert len(set(read_packets(tmp_path / "parts").flow_id)) == 3
    with pytest.raises(ValueError, match="part_rows"):
        generate(tiny_model, tmp_path / "bad", classes=[cls], count=1, part_rows=0)
