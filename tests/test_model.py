"""Native backend: training writes a complete model dir, loss falls, sampling keeps structure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.model.config import load_config
from netdiffusion.model.generate import generate
from netdiffusion.model.testing import write_synthetic_dataset
from netdiffusion.model.train import train


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), flows=6)


@pytest.fixture(scope="module")
def trained(synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("m") / "model"
    result = train(synth, out, config={"preset": "tiny", "training": {"steps": 60, "log_every": 10,
                                                                      "lr": 3e-3}}, seed=1)
    return out, result


def test_config_presets_and_overrides() -> None:
    cfg = load_config({"preset": "tiny", "training": {"steps": 3}})
    assert cfg["training"]["steps"] == 3 and cfg["model"]["dim"] == 32
    assert load_config("default")["training"]["steps"] > load_config("tiny")["training"]["steps"]
    assert load_config("gpu")["training"]["mixed_precision"] == "bf16"
    with pytest.raises(ValueError, match="unknown preset"):
        load_config({"preset": "nope"})
    with pytest.raises(FileNotFoundError):
        load_config("/no/such/config.yaml")


def test_model_dir_contents(trained: tuple[Path, dict], synth: Path) -> None:
    out, result = trained
    meta = json.loads((out / "model.json").read_text())
    assert meta["backend"] == "native" and meta["classes"] == ["alpha", "beta"]
    assert meta["prompts"] == {"alpha": "pixelated network data, type-0", "beta": "pixelated network data, type-1"}
    assert meta["columns"] == read_layout(synth).columns and meta["packets"] == 1024
    assert meta["model_id"].startswith("netdiffusion-native-")
    assert (out / "weights" / "diffusion_pytorch_model.safetensors").exists()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    assert {"loss", "lr", "bit_accuracy"} <= set(metrics[0])
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing) == {"alpha", "beta"}
    assert timing["alpha"]["iat_ns_quantiles"][0] >= 1000 and 0 < timing["alpha"]["responder_share"] < 1
    assert result["steps"] == 60 and result["steps_per_s"] > 0


def test_loss_falls(trained: tuple[Path, dict]) -> None:
    out, result = trained
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["loss"] < 0.8 * metrics[0]["loss"], metrics
    assert result["final_loss"] < result["first_loss"]


def test_generate_keeps_template_structure(trained: tuple[Path, dict], tmp_path: Path, synth: Path) -> None:
    out, _ = trained
    stats = generate(out, tmp_path / "gen", count=4, seed=5)
    assert stats["flows"] == 8 and stats["flows_per_s"] > 0
    gen = read_packets(tmp_path / "gen")
    real = read_packets(synth)
    layout = read_layout(tmp_path / "gen")
    for label, proto in (("alpha", "tcp"), ("beta", "udp")):
        g = gen.take(gen.label == label)
        assert len(np.unique(g.flow_id)) == 4
        pres = layout.presence(g.nprint)
        h = list(layout.headers)
        assert pres[:, h.index("ipv4")].all() and pres[:, h.index(proto)].all()
        assert not pres[:, h.index("ipv6")].any() and not pres[:, h.index("icmp")].any()
        assert set(np.unique(g.nprint)) == {-1, 0, 1}
        assert (g.frame == 0).all() and (g.source == stats["model_id"]).all()
        assert (g.macro == "test").all()
        # timestamps: non-decreasing within each flow, start at 0
        for _, f in g.flows():
            assert f.timestamp[0] == 0 and (np.diff(f.timestamp) >= 0).all()
            assert f.packet_index.tolist() == list(range(len(f)))
        r = real.take(real.label == label)
        assert g.nprint.shape[1] == r.nprint.shape[1]
    imgs = sorted((tmp_path / "gen" / "images" / "alpha").glob("*.png"))
    assert len(imgs) == 4


def test_generation_deterministic_and_per_class_parallel(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    generate(out, tmp_path / "all", count=3, seed=9, images=False)
    generate(out, tmp_path / "again", count=3, seed=9, images=False)
    generate(out, tmp_path / "split", classes=["beta"], count=3, seed=9, images=False)
    generate(out, tmp_path / "split", classes=["alpha"], count=3, seed=9, images=False)
    a, b, c = (read_packets(tmp_path / d) for d in ("all", "again", "split"))
    for x in (b, c):
        oa, ox = np.lexsort((a.packet_index, a.flow_id)), np.lexsort((x.packet_index, x.flow_id))
        np.testing.assert_array_equal(a.nprint[oa], x.nprint[ox])
        np.testing.assert_array_equal(a.timestamp[oa], x.timestamp[ox])
    d = generate(out, tmp_path / "other", count=3, seed=10, images=False)
    assert d["flows"] == 6
    other = read_packets(tmp_path / "other")
    assert not np.array_equal(other.nprint[:20], a.nprint[:20])
    summary = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert set(summary["per_class"]) == {"alpha", "beta"}


def test_summary_counts_every_seed_written_to_the_folder(trained: tuple[Path, dict], tmp_path: Path) -> None:
    """Regression: a second call with another seed adds <class>-s<seed>.parquet next to the first,
    yet summary.json kept only the last call's count (5 flows listed, 8 in the files)."""
    out, _ = trained
    generate(out, tmp_path / "g", count=3, seed=0, images=False)
    generate(out, tmp_path / "g", classes=["alpha"], count=2, seed=1, images=False)
    generate(out, tmp_path / "g", classes=["alpha"], count=1, seed=1, images=False)  # rewrites alpha-s1
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    data = read_packets(tmp_path / "g")
    for label in ("alpha", "beta"):
        flows = {f for f, lab in zip(data.flow_id.tolist(), data.label.tolist(), strict=True) if lab == label}
        assert summary["per_class"][label]["flows"] == len(flows), label
        assert summary["per_class"][label]["packets"] == int((data.label == label).sum()), label
    assert summary["flows"] == len(set(data.flow_id.tolist())) == 3 + 1 + 3


def test_samplers_and_steps(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = trained
    for sampler in ("ddpm", "dpmsolver", "unipc"):
        stats = generate(out, tmp_path / sampler, classes=["alpha"], count=2, steps=3, sampler=sampler,
                         images=False)
        assert stats["flows"] == 2
    with pytest.raises(ValueError, match="unknown sampler"):
        generate(out, tmp_path / "x", count=1, sampler="nope", images=False)
    with pytest.raises(ValueError, match="no classes"):
        generate(out, tmp_path / "y", classes=["gamma"], count=1)


def test_resume_continues_from_checkpoint(synth: Path, tmp_path: Path) -> None:
    cfg = {"preset": "tiny", "training": {"steps": 4, "checkpoint_every": 2, "keep_checkpoints": True}}
    train(synth, tmp_path / "m", config=cfg)
    assert (tmp_path / "m" / "checkpoints" / "step-4" / "step.json").exists()
    cfg["training"]["steps"] = 6
    result = train(synth, tmp_path / "m", config=cfg, resume=True)
    assert result["start_step"] == 4 and result["steps"] == 6
    steps = [json.loads(line)["step"] for line in (tmp_path / "m" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_training_is_deterministic(synth: Path, tmp_path: Path) -> None:
    r1 = train(synth, tmp_path / "a", config="tiny", seed=3)
    r2 = train(synth, tmp_path / "b", config="tiny", seed=3)
    assert r1["final_loss"] == r2["final_loss"]
    w1 = (tmp_path / "a" / "weights" / "diffusion_pytorch_model.safetensors").read_bytes()
    w2 = (tmp_path / "b" / "weights" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert w1 == w2


def test_lora_refresh_from_base(trained: tuple[Path, dict], tmp_path: Path) -> None:
    base, _ = trained
    refresh = write_synthetic_dataset(tmp_path / "refresh", classes={"alpha": "tcp"}, flows=3, seed=42)
    out = tmp_path / "lora"
    result = train(refresh, out, config={"preset": "tiny", "init_from": str(base),
                                         "lora": {"r": 4, "alpha": 4}, "training": {"steps": 3}})
    assert result["trainable_parameters"] < 20_000  # adapters only
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["alpha", "beta"] and meta["lora"]["merged"]
    assert meta["init_from"]["model_id"] == json.loads((base / "model.json").read_text())["model_id"]
    assert (out / "lora_adapter.safetensors").stat().st_size > 0
    stats = generate(out, tmp_path / "gen", count=2, images=False)
    assert stats["flows"] == 4
    with pytest.raises(ValueError, match="lacks classes"):
        other = write_synthetic_dataset(tmp_path / "other", classes={"gamma": "udp"}, flows=2)
        train(other, tmp_path / "bad", config={"preset": "tiny", "init_from": str(base)})


def test_tiny_model_fixture(tiny_model: Path, tmp_path: Path) -> None:
    meta = json.loads((tiny_model / "model.json").read_text())
    stats = generate(tiny_model, tmp_path / "g", classes=meta["classes"][:1], count=1, images=False)
    assert stats["flows"] == 1


def test_batch_sampler_windows_and_prefetch_order(synth: Path) -> None:
    """Windows are the flows' rows in the model's columns; prefetching (used on a GPU) keeps the order."""
    from netdiffusion.model.data import load_flows
    from netdiffusion.model.train import BatchSampler

    flows = load_flows(synth, packets=64, max_flows_per_class=None, seed=0)
    columns = np.arange(0, flows.layout.width, 3)
    plain, ahead = BatchSampler(flows, 4, 16, 7, columns=columns), BatchSampler(flows, 4, 16, 7, columns=columns)
    ahead.prefetch()
    for _ in range(5):
        a, b = plain(), ahead()
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x.numpy(), y.numpy())
        bits, _, row_mask, positions, direction, to_end = a
        for j in range(len(bits)):
            n, s = int(row_mask[j].sum()), int(positions[j, 0])
            matches = [i for i in range(len(flows)) if flows.lengths[i] >= n and
                       np.array_equal(flows.flow(i)[s : s + n][:, columns], bits[j, :n].numpy()) and
                       np.array_equal(flows.direction[flows.offsets[i] + s : flows.offsets[i] + s + n],
                                      direction[j, :n].numpy())]
            assert matches, "window (bits and directions) is not a slice of any flow"
            # packets left before the end of the flow the window came from
            assert any(np.array_equal(to_end[j, :n].numpy(), flows.lengths[i] - 1 - (s + np.arange(n)))
                       for i in matches)
            assert (bits[j, n:].numpy() == -1).all()


def test_templates_keep_each_packets_direction(synth: Path, tmp_path: Path) -> None:
    from netdiffusion.model.data import build_templates, load_flows, load_templates, save_templates

    flows = load_flows(synth, packets=1024, max_flows_per_class=None, seed=0)
    templates = build_templates(flows, per_class=100, seed=0)
    for ci, name in enumerate(flows.classes):
        idx = np.flatnonzero(flows.class_index == ci)  # fewer flows than per_class: all, in order
        want = np.concatenate([flows.direction[flows.offsets[i] : flows.offsets[i + 1]] for i in idx])
        assert np.array_equal(templates[name].direction, want) and set(np.unique(want)) == {0, 1}
    save_templates(tmp_path / "t.npz", flows.classes, templates)
    back = load_templates(tmp_path / "t.npz", flows.classes)
    assert all(np.array_equal(back[c].direction, templates[c].direction) for c in flows.classes)
    # templates written before they kept directions load with none
    np.savez_compressed(tmp_path / "old.npz", c0_lengths=templates["alpha"].lengths,
                        c0_offsets=templates["alpha"].offsets)
    assert load_templates(tmp_path / "old.npz", ["alpha"])["alpha"].direction is None


def test_generation_is_conditioned_on_template_directions(trained: tuple[Path, dict]) -> None:
    from netdiffusion.model.data import load_templates
    from netdiffusion.model.generate import _native_filler, load_model_meta

    out, _ = trained
    meta = load_model_meta(out)
    tpl = load_templates(out / "templates.npz", meta["classes"])["alpha"]
    from netdiffusion.fields import Layout
    from netdiffusion.image import mask_from_lengths

    rows = slice(tpl.offsets[0], tpl.offsets[1])
    mask = mask_from_lengths(tpl.lengths[rows], Layout.from_columns(meta["columns"]))
    fill = _native_filler(out, meta, steps=4, sampler=None)
    same = fill([mask], 0, [1, 2], [tpl.direction[rows]])[0]
    assert np.array_equal(same, fill([mask], 0, [1, 2], [tpl.direction[rows]])[0])
    flipped = fill([mask], 0, [1, 2], [1 - tpl.direction[rows]])[0]
    assert not np.array_equal(same, flipped)  # the model reads the directions it is given
    # and how many packets follow each row: the same rows read as the head of a longer flow differ
    import torch

    from netdiffusion.model.native import PacketDiffusionTransformer

    net = PacketDiffusionTransformer.from_pretrained(str(out / "weights")).eval()
    cols = np.asarray(meta["active_columns"])
    x = torch.from_numpy(mask[:, cols][None].astype(np.float32))
    args = (x, x, torch.tensor([500]), torch.tensor([0]))
    kw = {"direction": torch.from_numpy(tpl.direction[rows][None].astype(np.int64))}
    n = len(mask)
    ending = net(*args, **kw, to_end=torch.arange(n - 1, -1, -1)[None])
    going_on = net(*args, **kw, to_end=torch.arange(n - 1, -1, -1)[None] + 30)
    assert not torch.allclose(ending, going_on)
    with pytest.raises(ValueError, match="end_input"):
        net(*args, **kw)
    with pytest.raises(ValueError, match="directions"):
        fill([mask], 0, [1, 2])


def test_model_without_direction_input_generates_from_old_templates(synth: Path, tmp_path: Path) -> None:
    """Models trained before templates kept directions (and without the direction input) still generate."""
    out = tmp_path / "model"
    train(synth, out, config={"preset": "tiny", "model": {"direction_input": False, "end_input": False},
                              "training": {"steps": 2}})
    with np.load(out / "templates.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.endswith("_direction")}
    np.savez_compressed(out / "templates.npz", **arrays)
    generate(out, tmp_path / "gen", count=2, steps=2)
    assert len(read_packets(tmp_path / "gen").flow_id) > 0
