"""One GPU session's checks, as one prepared run (device time is scarce: every step is timed).

1. native backend, ``gpu`` preset (bf16, dim 512, 8 layers, full 1,024 rows): a short probe for
   steps/s, then training sized to ``--native-seconds``; generation of ``--count`` flows per class.
2. Stable Diffusion backend at the paper's size (512 px, LoRA r 64, fp16, gradient
   checkpointing, 30 sampling steps, ControlNet branch): no weights may be downloaded, so the
   base pipeline is random with SD 1.5's architecture (``build_tiny_pipeline(architecture="sd15")``).
   This measures speed and memory and checks the code path on CUDA; its images mean nothing.

Writes ``<out>/gpu_check.json`` and ``<out>/native_generated.tar`` (the generated dataset, to
repair / validate / evaluate on a machine with tshark). ``--smoke`` runs it all at toy sizes
on CPU to check the script before device time is spent.

    python scripts/gpu_check.py --train .gpu/train --out $OUT [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

RESULTS: dict = {}


def step(name: str, cmd: list[str], out: Path, timeout: float) -> dict:
    """Run one CLI call, log to ``out/<name>.log``; record seconds and rc (a failure ends only that part)."""
    started = time.time()
    with open(out / f"{name}.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    record = {"rc": rc, "seconds": round(time.time() - started, 1), "cmd": " ".join(cmd[2:])}
    RESULTS.setdefault("steps", {})[name] = record
    print(f"[gpu_check] {name}: {record}", flush=True)
    save(out)
    return record


def save(out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def gpu_memory() -> dict:
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.used,memory.total,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
        return {"nvidia_smi": text.strip()}
    except (OSError, subprocess.TimeoutExpired):
        return {}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, type=Path, help="encoded training dataset")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--native-seconds", type=float, default=150.0, help="training time budget, native backend")
    ap.add_argument("--count", type=int, default=8, help="flows per class (native)")
    ap.add_argument("--sd-steps", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="toy sizes on CPU")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: native, sd")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    skip = {s for s in args.skip.split(",") if s}
    py = [sys.executable, "-m", "netdiffusion"]

    import torch

    RESULTS["env"] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                      "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                      "smoke": args.smoke, **gpu_memory()}
    for mod in ("diffusers", "peft", "transformers", "accelerate", "numpy", "pyarrow"):
        try:
            RESULTS["env"][mod] = __import__(mod).__version__
        except ImportError as exc:
            RESULTS["env"][mod] = f"missing: {exc}"
    print(f"[gpu_check] env: {RESULTS['env']}", flush=True)
    save(args.out)

    if "native" not in skip:
        model = args.work / "native_model"
        gen = args.work / "native_generated"
        shrink = ["--set", "model.dim=32", "--set", "model.layers=1", "--set", "training.batch_size=2",
                  "--set", "training.max_rows=32", "--set", "training.mixed_precision=\"no\""] if args.smoke else []
        probe_steps = 6 if args.smoke else 60
        probe = step("native_probe", py + ["train", "--data", str(args.train), "--output", str(args.work / "probe"),
                                           "--config", "gpu", "--set", f"training.steps={probe_steps}",
                                           "--set", "training.checkpoint_every=0", "--set", "training.log_every=10",
                                           "--set", "training.warmup_steps=10", *shrink], args.out, 600)
        metrics = read_json(args.work / "probe" / "model.json").get("train_metrics", {})
        sps = float(metrics.get("steps_per_s") or 0.0)
        RESULTS["native_probe_metrics"] = metrics
        if probe["rc"] == 0 and sps > 0:
            steps = 10 if args.smoke else int(min(20000, max(300, sps * args.native_seconds)))
            RESULTS["native_steps"] = steps
            train = step("native_train", py + ["train", "--data", str(args.train), "--output", str(model),
                                               "--config", "gpu", "--set", f"training.steps={steps}",
                                               "--set", f"training.warmup_steps={min(500, steps // 10)}",
                                               "--set", "training.checkpoint_every=0", *shrink],
                         args.out, args.native_seconds * 2.5 + 120)
            meta = read_json(model / "model.json")
            RESULTS["native_train_metrics"] = meta.get("train_metrics", {})
            RESULTS["native_parameters"] = meta.get("parameters")
            RESULTS["native_gpu_after_train"] = gpu_memory()
            if train["rc"] == 0:
                gen_cmd = py + ["generate", "--model", str(model), "--output", str(gen),
                                "--count", str(2 if args.smoke else args.count), "--seed", "0"]
                if args.smoke:
                    gen_cmd += ["--steps", "2"]
                if step("native_generate", gen_cmd, args.out, 400)["rc"] == 0:
                    RESULTS["native_generate_summary"] = read_json(gen / "summary.json")
                    with tarfile.open(args.out / "native_generated.tar", "w") as tar:
                        for f in sorted(gen.iterdir()):
                            if f.suffix in (".parquet", ".json"):
                                tar.add(f, arcname=f"native_generated/{f.name}")
                        for f in ("model.json", "train_metrics.jsonl"):
                            if (model / f).exists():
                                tar.add(model / f, arcname=f"native_model/{f}")
        save(args.out)

    if "sd" not in skip:
        base = args.work / "sd15_random"
        model = args.work / "sd_model"
        gen = args.work / "sd_generated"
        t = time.time()
        from netdiffusion.model.sd import build_tiny_pipeline

        build_tiny_pipeline(base, resolution=32 if args.smoke else 512, architecture="tiny" if args.smoke else "sd15")
        RESULTS["sd_build_random_base_seconds"] = round(time.time() - t, 1)
        sd_set = ["--set", f"base_model_path=\"{base}\"", "--set", "build_tiny=false",
                  "--set", "controlnet_path=null", "--set", f"training.steps={2 if args.smoke else args.sd_steps}",
                  "--set", "training.checkpoint_every=0", "--set", "training.log_every=10",
                  "--set", "training.max_flows_per_class=50", "--set", "data.templates_per_class=8",
                  "--set", "training.warmup_steps=10"]
        if args.smoke:
            sd_set += ["--set", "resolution=32", "--set", "training.mixed_precision=\"no\"",
                       "--set", "training.gradient_checkpointing=false"]
        if step("sd_train", py + ["train", "--backend", "sd", "--data", str(args.train), "--output", str(model),
                                  "--config", "sd", *sd_set], args.out, 400)["rc"] == 0:
            meta = read_json(model / "model.json")
            RESULTS["sd_train_metrics"] = meta.get("train_metrics", {})
            RESULTS["sd_gpu_after_train"] = gpu_memory()
            classes = ",".join(meta.get("classes", [])[:2])
            gen_cmd = py + ["generate", "--model", str(model), "--output", str(gen), "--classes", classes,
                            "--count", "4", "--batch", "4", "--seed", "0"]
            if args.smoke:
                gen_cmd += ["--steps", "2"]
            if step("sd_generate", gen_cmd, args.out, 300)["rc"] == 0:
                RESULTS["sd_generate_summary"] = read_json(gen / "summary.json")
        save(args.out)
    print(json.dumps(RESULTS, indent=1, default=str)[:6000], flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
