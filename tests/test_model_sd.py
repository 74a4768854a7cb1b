"""Stable Diffusion path end to end with a tiny random pipeline built locally (no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.model.generate import generate
from netdiffusion.model.sd import build_tiny_pipeline, resolve_local
from netdiffusion.model.testing import write_synthetic_dataset
from netdiffusion.model.train import train


def test_resolve_local_refuses_hub_ids(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no hub downloads"):
        resolve_local("runwayml/stable-diffusion-v1-5")
    assert resolve_local(tmp_path) == tmp_path


@pytest.mark.slow
def test_sd_lora_controlnet_end_to_end(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", flows=3)
    out = tmp_path / "sd"
    result = train(data, out, backend="sd", config={"preset": "sd-tiny", "training": {"steps": 3}})
    assert result["backend"] == "sd" and result["steps"] == 3 and np.isfinite(result["final_loss"])
    meta = json.loads((out / "model.json").read_text())
    assert meta["backend"] == "sd" and meta["prompts"]["beta"] == "pixelated network data, type-1"
    lora = load_file(str(out / meta["lora_weights"]))
    assert lora and all("lora" in k for k in lora)
    assert (out / "tiny_base" / "tokenizer").is_dir()

    stats = generate(out, tmp_path / "gen", count=2, seed=1)
    assert stats["flows"] == 4
    gen = read_packets(tmp_path / "gen")
    layout = read_layout(tmp_path / "gen")
    h = list(layout.headers)
    for label, proto in (("alpha", "tcp"), ("beta", "udp")):
        g = gen.take(gen.label == label)
        pres = layout.presence(g.nprint)
        assert pres[:, h.index("ipv4")].all() and pres[:, h.index(proto)].all()
        assert not pres[:, h.index("ipv6")].any()
    assert len(list((tmp_path / "gen" / "images" / "beta").glob("*.png"))) == 2
    again = generate(out, tmp_path / "again", classes=["beta"], count=2, seed=1, images=False)
    assert again["flows"] == 2
    b1 = read_packets(tmp_path / "gen", labels=["beta"])
    b2 = read_packets(tmp_path / "again")
    o1, o2 = np.lexsort((b1.packet_index, b1.flow_id)), np.lexsort((b2.packet_index, b2.flow_id))
    np.testing.assert_array_equal(b1.nprint[o1], b2.nprint[o2])


def test_tiny_pipeline_has_sd15_layout(tmp_path: Path) -> None:
    path = build_tiny_pipeline(tmp_path / "p")
    index = json.loads((path / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
    ids = tok("pixelated network data, type-3").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) > 10


def test_base_and_controlnet_paths_are_checked_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    # a relative dir without the pipeline parts: transformers read "sdbase/tokenizer" as a hub id and
    # tried to download it; an absolute one was an OSError traceback
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the old code must fail, not hang, if it reaches for the hub
    monkeypatch.chdir(tmp_path)
    data = write_synthetic_dataset(tmp_path / "data", flows=1)
    (tmp_path / "sdbase").mkdir()
    for base in ("sdbase", str(tmp_path / "sdbase")):
        with pytest.raises(FileNotFoundError, match="not a Stable Diffusion pipeline directory .*no tokenizer/"):
            train(data, tmp_path / "m", backend="sd", config={"preset": "sd-tiny", "base_model_path": base})
    # a wrong ControlNet path failed only at generate time, after the whole training run
    with pytest.raises(FileNotFoundError, match="not a ControlNet directory"):
        train(data, tmp_path / "m", backend="sd", config={"preset": "sd-tiny", "controlnet_path": "sdbase"})
    assert not (tmp_path / "m").exists()


def test_sd_checkpoints_removed_and_resume_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_synthetic_dataset(tmp_path / "data", flows=1, packets=(2, 4))
    cfg = {"preset": "sd-tiny", "training": {"steps": 2, "checkpoint_every": 1, "batch_size": 1}}
    out = tmp_path / "sd"
    train(data, out, backend="sd", config=cfg)
    # checkpoints hold the whole UNet: they were left in the model dir (and logged to MLflow with it)
    assert not (out / "checkpoints").exists()
    # a local base path is stored absolute: generate runs from any working directory
    base = build_tiny_pipeline(tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    kept = {"preset": "sd-tiny", "base_model_path": "base", "build_tiny": False,
            "training": {**cfg["training"], "keep_checkpoints": True}}
    train(data, tmp_path / "kept", backend="sd", config=kept)
    meta = json.loads((tmp_path / "kept" / "model.json").read_text())
    assert meta["config"]["base_model_path"] == str(base.resolve())
    assert (tmp_path / "kept" / "checkpoints" / "step-2").is_dir()
    # resuming with other LoRA shapes was a RuntimeError (size mismatch) from load_state
    other = {**kept, "lora": {"r": 8, "alpha": 8}, "training": {**kept["training"], "steps": 3}}
    with pytest.raises(ValueError, match="cannot resume, the checkpoint was trained with a different lora"):
        train(data, tmp_path / "kept", backend="sd", config=other, resume=True)


def test_sd_warmup_steps_are_applied(tmp_path: Path) -> None:
    # training.warmup_steps (100 in the sd preset) was read nowhere: the lr was constant from step 1
    data = write_synthetic_dataset(tmp_path / "data", flows=1, packets=(2, 4))
    cfg = {"preset": "sd-tiny", "training": {"steps": 3, "warmup_steps": 3, "batch_size": 1, "lr": 3e-4}}
    train(data, tmp_path / "sd", backend="sd", config=cfg)
    rows = [json.loads(line) for line in (tmp_path / "sd" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["lr"] for r in rows], [2e-4, 3e-4, 3e-4])


def test_resolve_local_s3_skips_folder_marker_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # S3 consoles (and SeaweedFS for `put_object(Key="p/unet/")`) keep zero-byte "p/unet/" objects:
    # one was downloaded as a file named unet, then "p/unet/config.json" failed with FileExistsError
    import boto3

    keys = ["base/", "base/unet/", "base/unet/config.json", "base/vae/", "base/vae/config.json"]

    class FakeS3:
        def get_paginator(self, name: str):
            assert name == "list_objects_v2"
            return self

        def paginate(self, Bucket: str, Prefix: str):  # noqa: N803 (boto3's names)
            yield {"Contents": [{"Key": k} for k in keys if k.startswith(Prefix)]}

        def download_file(self, bucket: str, key: str, dest: str) -> None:
            Path(dest).write_text(key)

    monkeypatch.setattr(boto3, "client", lambda *a, **k: FakeS3())
    path = resolve_local("s3://bucket/base", cache=tmp_path)
    assert (path / "unet" / "config.json").read_text() == "base/unet/config.json"
    assert (path / "vae" / "config.json").is_file()


def test_resolve_local_s3_errors_name_the_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # NoSuchBucket / SignatureDoesNotMatch were botocore tracebacks (exit 1) from `train --backend sd`
    import boto3
    from botocore.exceptions import ClientError

    class FakeS3:
        def get_paginator(self, name: str):
            return self

        def paginate(self, **kwargs):
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}},
                              "ListObjectsV2")

    monkeypatch.setattr(boto3, "client", lambda *a, **k: FakeS3())
    with pytest.raises(FileNotFoundError, match=r"s3://nosuchbucket/base: cannot read weights from S3 .*NoSuchBucket"):
        resolve_local("s3://nosuchbucket/base", cache=tmp_path)


def test_sd_generation_is_seeded_on_the_raw_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: the end-to-end test's same-seed check compares bits, and the tiny random VAE decodes every
    pixel to a grey that colour-corrects to 0, so it held whatever the seeding did. The pipeline's
    own images must repeat for a seed and change with it."""
    import diffusers

    data = write_synthetic_dataset(tmp_path / "data", flows=2)
    out = tmp_path / "sd"
    train(data, out, backend="sd", config={"preset": "sd-tiny", "training": {"steps": 1}})
    images: list[np.ndarray] = []
    call = diffusers.StableDiffusionControlNetPipeline.__call__

    def recording(self, *args, **kwargs):
        result = call(self, *args, **kwargs)
        images.append(np.asarray(result.images).copy())
        return result

    monkeypatch.setattr(diffusers.StableDiffusionControlNetPipeline, "__call__", recording)
    runs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        images.clear()
        generate(out, tmp_path / name, classes=["beta"], count=2, seed=seed, images=False)
        runs.append(np.concatenate([i.reshape(-1) for i in images]))
    assert runs[0].std() > 0  # the raw images are not constant: there is something to compare
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
