"""train --resume after an interruption: no duplicated metrics, no resuming into other data/config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netdiffusion.model.testing import write_synthetic_dataset
from netdiffusion.model.train import train

CFG = {"preset": "tiny", "training": {"steps": 4, "checkpoint_every": 2, "keep_checkpoints": True}}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("resume_synth"), flows=3, packets=(4, 8))


def test_resume_after_interruption_keeps_one_record_per_step(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    train(synth, out, config=CFG)
    # as if killed after logging steps 3-4 but before their checkpoint was written
    shutil.rmtree(out / "checkpoints" / "step-4")
    result = train(synth, out, config=CFG, resume=True)
    assert result["start_step"] == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_resume_with_other_model_or_classes_is_refused(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    train(synth, out, config=CFG)
    with pytest.raises(ValueError, match="cannot resume.*model"):
        train(synth, out, config={**CFG, "model": {"dim": 64}}, resume=True)
    other = write_synthetic_dataset(tmp_path / "other", classes={"gamma": "tcp", "delta": "udp"}, flows=3,
                                    packets=(4, 8))
    with pytest.raises(ValueError, match="cannot resume.*classes"):
        train(other, out, config=CFG, resume=True)
