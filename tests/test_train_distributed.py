"""The same train command under torchrun with 2 CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from netdiffusion.dataset import read_packets
from netdiffusion.model.generate import generate
from netdiffusion.model.testing import write_synthetic_dataset
from netdiffusion.model.train import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(tmp_path: Path) -> None:
    data = write_synthetic_dataset(tmp_path / "data", flows=6)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "netdiffusion", "train", "--data", str(data), "--output", str(tmp_path / "ddp"),
           "--config", "tiny", "--set", "training.steps=40", "--set", "training.log_every=10",
           "--set", "training.lr=0.003", "--set", "training.checkpoint_every=20",
           "--set", "training.keep_checkpoints=true"]
    scratch = tmp_path / "tmp"  # torchrun leaves a torchelastic_* folder in TMPDIR
    scratch.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["processes"] == 2
    ddp = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["processes"] == 2 for m in ddp)
    assert ddp[-1]["loss"] < ddp[0]["loss"]
    assert (tmp_path / "ddp" / "checkpoints" / "step-40" / "step.json").exists()

    single = train(data, tmp_path / "single", config={"preset": "tiny", "training": {
        "steps": 40, "log_every": 10, "lr": 0.003}})
    one = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert one[-1]["loss"] < one[0]["loss"] and single["processes"] == 1
    # same behaviour: both fall by a comparable amount
    assert abs(ddp[-1]["loss"] - one[-1]["loss"]) < 0.15

    # the DDP checkpoint resumes in a single process and the model dir loads for generation
    resumed = train(data, tmp_path / "ddp", config={"preset": "tiny", "training": {
        "steps": 42, "lr": 0.003, "checkpoint_every": 20, "keep_checkpoints": True}}, resume=True)
    assert resumed["start_step"] == 40
    stats = generate(tmp_path / "ddp", tmp_path / "gen", count=2, images=False)
    assert stats["flows"] == 4 and len(read_packets(tmp_path / "gen")) > 0
