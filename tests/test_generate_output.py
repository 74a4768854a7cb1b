"""generate: arguments checked before writing, duplicate classes, and output folders of other data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import read_packets
from netdiffusion.model.generate import generate


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from netdiffusion.model.testing import write_synthetic_dataset
    from netdiffusion.model.train import train

    data = write_synthetic_dataset(tmp_path_factory.mktemp("gen_out_data"), flows=3, packets=(4, 8))
    out = tmp_path_factory.mktemp("gen_out_model") / "model"
    train(data, out, config={"preset": "tiny", "training": {"steps": 1}}, seed=0)
    return out


def test_negative_seed_rejected_before_output(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate(model, tmp_path / "g", count=1, seed=-1, images=False)
    assert not (tmp_path / "g").exists()


def test_duplicate_classes_generated_once(model: Path, tmp_path: Path) -> None:
    stats = generate(model, tmp_path / "g", classes=["alpha", "alpha"], count=2, images=False)
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert stats["flows"] == summary["flows"] == 2 == len(set(read_packets(tmp_path / "g").flow_id))


def test_output_of_another_model_or_dataset_refused(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    generate(model, out, classes=["alpha"], count=1, images=False)
    generate(model, out, classes=["beta"], count=1, seed=1, images=False)  # same model: fine
    other = tmp_path / "other"
    shutil.copytree(model, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "model_id": "netdiffusion-native-other"}))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="already holds output of model"):
        generate(other, out, classes=["alpha"], count=1, seed=2, images=False)
    assert sorted(p.name for p in out.iterdir()) == before
    # a parallel per-class call of the same model whose shard exists before its summary: fine
    (out / "summary.json").unlink()
    generate(model, out, classes=["beta"], count=1, seed=3, images=False)
    # shards of data that is not this model's output (e.g. an encoded dataset): refused
    from netdiffusion.dataset import Packets, write_shard

    rows = read_packets(out)
    write_shard(Packets(**{**rows.__dict__, "source": np.full(len(rows), "capture.pcap", dtype=object)}),
                out / "encoded.parquet")
    with pytest.raises(ValueError, match="not this model's output"):
        generate(model, out, classes=["alpha"], count=1, images=False)


def test_rerun_with_fewer_flows_leaves_no_stale_images(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    generate(model, out, classes=["alpha"], count=3, seed=1)
    generate(model, out, classes=["alpha"], count=2, seed=11)
    generate(model, out, classes=["alpha"], count=1, seed=1)
    names = sorted(p.name for p in (out / "images" / "alpha").iterdir())
    ids = sorted(f"{f}.png" for f in set(read_packets(out).flow_id))
    assert names == ids and len(names) == 1 + 2
