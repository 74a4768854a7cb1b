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
