"""Native model on CPU, ``default`` config: training steps/s and generated flows/s (1,024 packets each).

Encodes the shared sample captures (all 15 classes), trains the default config for a short run
and samples flows whose templates are full 1,024-packet flows. Numbers depend on the machine and
on whatever else runs on it; the result records torch's thread count and the load average.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

import netdiffusion  # noqa: F401  (before torch, as in the CLI: its OpenMP settings precede torch's runtime)

TRAIN_STEPS = int(os.environ.get("BENCH_MODEL_STEPS", "30"))
GEN_FLOWS = int(os.environ.get("BENCH_MODEL_FLOWS", "4"))


def _shared_data() -> Path:
    env = os.environ.get("NETDIFFUSION_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> dict:
    import torch

    from netdiffusion.encode import encode_paths
    from netdiffusion.image import mask_from_lengths
    from netdiffusion.model.config import load_config
    from netdiffusion.model.data import load_templates
    from netdiffusion.model.generate import _native_filler, load_model_meta
    from netdiffusion.model.train import train

    shared = _shared_data()
    with tempfile.TemporaryDirectory(prefix="bench_model_") as tmp:
        data = Path(tmp) / "data"
        encode_paths([shared / "pcaps"], data, manifest=shared / "manifest.csv", packets=1024, progress=False)
        cfg = load_config("default")
        cfg["training"].update(steps=TRAIN_STEPS, checkpoint_every=0, log_every=10)
        result = train(data, Path(tmp) / "model", config=cfg)
        meta = load_model_meta(Path(tmp) / "model")
        templates = load_templates(Path(tmp) / "model" / "templates.npz", meta["classes"])
        from netdiffusion.fields import Layout

        layout = Layout.from_columns(meta["columns"])
        masks, directions = [], []
        for tpl in templates.values():
            for i in np.flatnonzero(np.diff(tpl.offsets) >= 1024):
                rows = slice(tpl.offsets[i], tpl.offsets[i] + 1024)
                masks.append(mask_from_lengths(tpl.lengths[rows], layout))
                directions.append(tpl.direction[rows])
        if not masks:
            raise RuntimeError("no 1,024-packet template flow in the sample data")
        masks = (masks * GEN_FLOWS)[:GEN_FLOWS]
        directions = (directions * GEN_FLOWS)[:GEN_FLOWS]
        fill = _native_filler(Path(tmp) / "model", meta, steps=None, sampler=None)
        batch = 2
        started = time.time()
        for b in range(0, len(masks), batch):
            fill(masks[b : b + batch], 0, [0, b], directions[b : b + batch])
        gen_seconds = time.time() - started
    return {
        "config": "default",
        "train_steps": TRAIN_STEPS,
        "train_steps_per_s": result["steps_per_s"],
        "train_seconds": result["seconds"],
        "projected_default_train_minutes": round(cfg_steps() / max(result["steps_per_s"], 1e-9) / 60, 2),
        "generated_flows": len(masks),
        "packets_per_flow": 1024,
        "sample_steps": cfg["diffusion"]["sample_steps"],
        "generated_flows_per_s": round(len(masks) / gen_seconds, 4),
        "generation_seconds": round(gen_seconds, 3),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def cfg_steps() -> int:
    from netdiffusion.model.config import load_config

    return int(load_config("default")["training"]["steps"])


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
