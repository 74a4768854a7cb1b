"""Training: ``train(data, output, backend=..., config=...)`` -> a self-contained model directory.

One accelerate-based loop serves CPU, one GPU and many processes (``torchrun`` /
``accelerate launch`` run the same command; accelerate sets up DDP, gloo on CPU). Features:
mixed precision where the device supports it, gradient checkpointing, EMA weights,
checkpoints every N steps with ``resume``, deterministic seeds, a tqdm bar with the loss and
``metrics.jsonl``. The model directory holds everything generation needs (weights, class <->
prompt table, presence templates, timing), so it can be copied to S3 / MLflow as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from netdiffusion.dataset import write_json
from netdiffusion.model.config import load_config
from netdiffusion.model.data import (
    FlowSet,
    build_templates,
    load_flows,
    load_templates,
    save_templates,
    timing_stats,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
WEIGHTS_DIR = "weights"
TEMPLATES_FILE = "templates.npz"
TIMING_FILE = "timing.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
PROMPT_TEMPLATE = "pixelated network data, type-{index}"


def class_prompts(classes: list[str], template: str = PROMPT_TEMPLATE) -> dict[str, str]:
    """The paper's per-class text prompts, one type number per class."""
    return {c: template.format(index=i, label=c) for i, c in enumerate(classes)}


def model_id_for(config: dict, classes: list[str], data: str, seed: int) -> str:
    digest = hashlib.sha1(json.dumps([config, classes, str(data), seed], sort_keys=True, default=str).encode())
    return f"netdiffusion-{config['backend']}-{digest.hexdigest()[:12]}"


def train(data: str | os.PathLike, output: str | os.PathLike, *, backend: str = "native",
          config: str | os.PathLike | dict[str, Any] | None = None, resume: bool = False, seed: int = 0
          ) -> dict[str, Any]:
    """Train a model on an encoded dataset; returns final metrics (steps, loss, seconds, steps/s).

    Raises ConfigError (a ValueError) for a bad config, FileNotFoundError for a missing dataset
    or, with ``resume``, when ``output`` holds no checkpoint (nothing is written then)."""
    cfg = load_config(config, backend=backend)
    if not Path(data).exists():
        raise FileNotFoundError(f"{data}: no such dataset")
    if resume and latest_checkpoint(Path(output)) is None:
        raise FileNotFoundError(f"no checkpoint in {Path(output) / CHECKPOINTS_DIR}: nothing to resume "
                                f"(drop --resume to train from scratch)")
    if backend == "native":
        return _train_native(Path(data), Path(output), cfg, resume=resume, seed=seed)
    if backend == "sd":
        from netdiffusion.model.sd import train_sd

        return train_sd(Path(data), Path(output), cfg, resume=resume, seed=seed)
    raise ValueError(f"unknown backend {backend!r} (native, sd)")


# -- shared helpers --------------------------------------------------------------------------------

def make_accelerator(training: dict):
    """An Accelerator for this machine; fp16/bf16 fall back to fp32 where unsupported."""
    import torch
    from accelerate import Accelerator

    precision = str(training.get("mixed_precision", "no"))
    if precision == "fp16" and not torch.cuda.is_available():
        precision = "no"
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        precision = "fp16"
    return Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available())


def latest_checkpoint(output: Path) -> Path | None:
    ckpts = sorted((p for p in (output / CHECKPOINTS_DIR).glob("step-*") if p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]))
    return ckpts[-1] if ckpts else None


def resume_state(accelerator, output: Path, metrics_path: Path, what: dict[str, Any], resume: bool) -> int:
    """The step to start from: with ``resume``, the latest checkpoint's state loaded (after checking
    it was trained with ``what``) and the metrics logged past it dropped; else 0 and no old metrics.
    Both backends."""
    if resume and (ckpt := latest_checkpoint(output)) is not None:
        saved = json.loads((ckpt / "step.json").read_text())
        _check_resume(ckpt, saved, what)
        accelerator.load_state(str(ckpt))
        start_step = int(saved["step"])
        log.info("resumed from %s at step %d", ckpt, start_step)
        if accelerator.is_main_process:
            truncate_metrics(metrics_path, start_step)
        return start_step
    if accelerator.is_main_process and metrics_path.exists():
        metrics_path.unlink()
    return 0


def remove_checkpoints(output: Path, training: dict) -> None:
    """Checkpoints are for resuming, not part of the model dir (an SD 1.5 one holds the whole
    UNet, ~3.4 GB), unless ``training.keep_checkpoints``."""
    ckpt_dir = output / CHECKPOINTS_DIR
    if ckpt_dir.exists() and not training.get("keep_checkpoints", False):
        shutil.rmtree(ckpt_dir)


def truncate_metrics(path: Path, step: int) -> None:
    """On resume: drop records past the checkpoint's ``step`` (the interrupted run logged them,
    and those steps are trained and logged again)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))


def append_metrics(path: Path, record: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def write_model_files(output: Path, cfg: dict, flows: FlowSet, seed: int, data: Path,
                      templates: dict, timing: dict, extra: dict | None = None) -> dict:
    """model.json + templates + timing: what generation needs besides the weights."""
    prompts = class_prompts(flows.classes, cfg.get("prompt_template", PROMPT_TEMPLATE))
    save_templates(output / TEMPLATES_FILE, flows.classes, templates)
    write_json(output / TIMING_FILE, timing)
    meta = {
        "format": 1,
        "backend": cfg["backend"],
        "model_id": model_id_for(cfg, flows.classes, str(data), seed),
        "classes": flows.classes,
        "prompts": prompts,
        "macros": flows.macros,
        "config": cfg,
        "columns": flows.layout.columns,
        "packets": int(cfg["data"]["packets"]),
        "seed": seed,
        "data": str(data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_json(output / MODEL_FILE, meta)
    return meta


class BatchSampler:
    """Class-balanced random flow windows of at most ``max_rows`` packets, padded per batch."""

    def __init__(self, flows: FlowSet, batch_size: int, max_rows: int, seed: int,
                 columns: np.ndarray | None = None) -> None:
        self.flows = flows
        self.columns = np.arange(flows.layout.width) if columns is None else np.asarray(columns)
        self.batch_size = batch_size
        self.max_rows = max_rows
        self.rng = np.random.default_rng(seed)
        self.by_class = [np.flatnonzero(flows.class_index == c) for c in range(len(flows.classes))]
        self.by_class = [idx for idx in self.by_class if len(idx)]
        # the model's columns gathered once: each window is then one contiguous copy (a per-window
        # column gather made the sampler, not the GPU, the limit of the `gpu` preset)
        self.bits = flows.bits if columns is None else np.ascontiguousarray(flows.bits[:, self.columns])
        self._next = None
        self._pool = None

    def __call__(self):
        """The next batch; on a GPU the one after it is built meanwhile in a thread (same order)."""
        if self._pool is None:
            return self._make()
        batch = self._next.result() if self._next is not None else self._make()
        self._next = self._pool.submit(self._make)
        return batch

    def prefetch(self) -> None:
        """Build batches one ahead in a background thread (numpy copies release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="batches")

    def _make(self):
        import torch

        picks = [c[self.rng.integers(len(c))] for c in
                 (self.by_class[self.rng.integers(len(self.by_class))] for _ in range(self.batch_size))]
        lengths = self.flows.lengths[picks]
        starts = [int(self.rng.integers(0, max(1, n - self.max_rows + 1))) for n in lengths]
        rows = int(min(self.max_rows, lengths.max()))
        width = len(self.columns)
        bits = np.full((len(picks), rows, width), -1, dtype=np.int8)
        row_mask = np.zeros((len(picks), rows), dtype=np.float32)
        positions = np.zeros((len(picks), rows), dtype=np.int64)
        direction = np.zeros((len(picks), rows), dtype=np.int64)
        to_end = np.zeros((len(picks), rows), dtype=np.int64)
        for j, (f, s) in enumerate(zip(picks, starts, strict=True)):
            start = self.flows.offsets[int(f)] + s
            stop = min(start + rows, self.flows.offsets[int(f) + 1])
            window = self.bits[start:stop]
            bits[j, : len(window)] = window
            direction[j, : len(window)] = self.flows.direction[start:stop]
            to_end[j, : len(window)] = self.flows.lengths[int(f)] - 1 - (s + np.arange(len(window)))
            row_mask[j, : len(window)] = 1
            positions[j] = s + np.arange(rows)
        return (torch.from_numpy(bits), torch.from_numpy(self.flows.class_index[picks]),
                torch.from_numpy(row_mask), torch.from_numpy(positions), torch.from_numpy(direction),
                torch.from_numpy(to_end))


# -- native backend --------------------------------------------------------------------------------

def active_columns(flows: FlowSet) -> np.ndarray:
    """Columns present in at least one training packet: the model only sees these.

    On the sample data 1,120 of 1,408 columns (IPv4 options and ICMP rarely or never occur);
    dropping the rest shrinks every (batch, rows, bits) tensor by a fifth."""
    present = np.zeros(flows.layout.width, dtype=bool)
    for a in range(0, len(flows.bits), 65536):
        present |= (flows.bits[a : a + 65536] != -1).any(axis=0)
    return np.flatnonzero(present)


def header_bits_of(layout, columns: np.ndarray) -> list[int]:
    """Active columns per header (headers without any are left out), for the mask embedding."""
    counts = [int(((columns >= layout.header_slice(h).start) & (columns < layout.header_slice(h).stop)).sum())
              for h in layout.headers]
    return [c for c in counts if c]


def _init_base(cfg: dict, flows: FlowSet) -> tuple[Any, dict | None, np.ndarray]:
    """The model to train: fresh, or a trained base (``init_from``) for a LoRA / full refresh."""
    from netdiffusion.model.native import PacketDiffusionTransformer

    base_dir = cfg.get("init_from")
    m = cfg["model"]
    if not base_dir:
        columns = active_columns(flows)
        model = PacketDiffusionTransformer(width=len(columns), num_classes=len(flows.classes),
                                           dim=m["dim"], layers=m["layers"], heads=m["heads"],
                                           ff_mult=m["ff_mult"], max_packets=cfg["data"]["packets"],
                                           header_bits=header_bits_of(flows.layout, columns),
                                           direction_input=bool(m.get("direction_input", False)),
                                           end_input=bool(m.get("end_input", False)))
        return model, None, columns
    base_dir = Path(base_dir)
    base_meta = json.loads((base_dir / MODEL_FILE).read_text())
    if base_meta["backend"] != "native":
        raise ValueError(f"{base_dir}: init_from must be a native model, got {base_meta['backend']}")
    if base_meta["columns"] != flows.layout.columns:
        raise ValueError(f"{base_dir}: base model was trained on a different nPrint layout")
    missing = sorted(set(flows.classes) - set(base_meta["classes"]))
    if missing:
        raise ValueError(f"{base_dir}: base model lacks classes {missing}; train a new base instead")
    model = PacketDiffusionTransformer.from_pretrained(base_dir / WEIGHTS_DIR)
    columns = np.asarray(base_meta["active_columns"], dtype=np.int64)
    unseen = np.setdiff1d(active_columns(flows), columns)
    if unseen.size:
        log.warning("%d columns present in the new data were absent from the base model's data; "
                    "they will be generated as unset", unseen.size)
    return model, base_meta, columns


def _train_native(data: Path, output: Path, cfg: dict, *, resume: bool, seed: int) -> dict[str, Any]:
    import torch
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from netdiffusion.model.native import diffusion_loss, make_train_scheduler

    tr, dcfg = cfg["training"], cfg["data"]
    accelerator = make_accelerator(tr)
    set_seed(seed, device_specific=False)
    flows = load_flows(data, packets=int(dcfg["packets"]), max_flows_per_class=tr.get("max_flows_per_class"),
                       seed=seed)
    model, base_meta, columns = _init_base(cfg, flows)
    if base_meta is not None:
        # keep the base's class indices so its class embeddings stay meaningful
        lookup = {c: i for i, c in enumerate(base_meta["classes"])}
        flows.class_index = np.array([lookup[flows.classes[i]] for i in flows.class_index], dtype=np.int64)
        data_classes = flows.classes
        flows.classes = list(base_meta["classes"])
        flows.macros = {**base_meta.get("macros", {}), **flows.macros}
    lora = cfg.get("lora")
    if lora:
        from peft import LoraConfig, get_peft_model

        if base_meta is None:
            log.warning("LoRA without init_from trains adapters on a random base")
        model = get_peft_model(model, LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 8)),
                                                 target_modules=list(lora.get("target_modules",
                                                                              ["to_q", "to_k", "to_v", "to_out.0"])),
                                                 lora_dropout=float(lora.get("dropout", 0.0))))
    if tr.get("gradient_checkpointing"):
        (model.base_model.model if lora else model).gradient_checkpointing = True
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=float(tr["lr"]), weight_decay=float(tr.get("weight_decay", 0.0)))
    steps = int(tr["steps"])
    warmup = int(tr.get("warmup_steps", 0))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    ema_decay = float(tr.get("ema_decay", 0.0))
    ema = EMAModel(params, decay=ema_decay) if ema_decay > 0 else None
    model, optimizer, lr_schedule = accelerator.prepare(model, optimizer, lr_schedule)
    if ema is not None:
        ema.to(accelerator.device)  # its shadow copies were made before prepare() moved the model
        accelerator.register_for_checkpointing(ema)
    scheduler = make_train_scheduler(cfg["diffusion"])

    output.mkdir(parents=True, exist_ok=True)
    metrics_path = output / METRICS_FILE
    what = _checkpoint_identity(cfg, flows, columns)
    start_step = resume_state(accelerator, output, metrics_path, what, resume)
    rank = accelerator.process_index
    sampler = BatchSampler(flows, int(tr["batch_size"]), int(tr["max_rows"]), seed=seed * 1000 + rank + start_step,
                           columns=columns)
    if accelerator.device.type == "cuda":
        sampler.prefetch()
    # on a GPU the noise is drawn there (the same seeds give other numbers than on CPU)
    generator = torch.Generator(accelerator.device).manual_seed(seed * 1000 + rank + 17 * start_step)
    log_every = max(1, int(tr.get("log_every", 10)))
    ckpt_every = int(tr.get("checkpoint_every", 0))

    model.train()
    started = time.time()
    bar = tqdm(range(start_step, steps), desc="train", disable=not accelerator.is_main_process,
               initial=start_step, total=steps)
    loss_value = float("nan")
    recent: list[float] = []
    first_losses: list[float] = []
    for step in bar:
        bits, labels, row_mask, positions, direction, to_end = (x.to(accelerator.device, non_blocking=True)
                                                                for x in sampler())
        with accelerator.autocast():
            loss, acc = diffusion_loss(model, scheduler, bits, labels, row_mask, positions, generator,
                                       with_accuracy=(step + 1) % log_every == 0 or step + 1 == steps,
                                       class_dropout=float(cfg["diffusion"].get("class_dropout", 0.0)),
                                       direction=direction, to_end=to_end)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        loss_value = float(accelerator.reduce(loss.detach(), reduction="mean"))
        recent.append(loss_value)
        if len(first_losses) < log_every:
            first_losses.append(loss_value)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if accelerator.is_main_process and (done % log_every == 0 or done == steps):
            elapsed = time.time() - started
            append_metrics(metrics_path, {
                "step": done, "loss": float(np.mean(recent)), "bit_accuracy": float(acc) if acc is not None else None,
                "lr": float(lr_schedule.get_last_lr()[0]), "seconds": round(elapsed, 3),
                "steps_per_s": round((done - start_step) / max(elapsed, 1e-9), 4),
                "processes": accelerator.num_processes,
            })
            recent = []
        if ckpt_every and (done % ckpt_every == 0 or (done == steps and tr.get("keep_checkpoints"))):
            _save_checkpoint(accelerator, output, done, what)
    seconds = time.time() - started
    accelerator.wait_for_everyone()

    result: dict[str, Any] = {
        "backend": "native", "steps": steps, "start_step": start_step, "final_loss": loss_value,
        "first_loss": float(np.mean(first_losses)) if first_losses else float("nan"),
        "seconds": round(seconds, 3), "steps_per_s": round((steps - start_step) / max(seconds, 1e-9), 4),
        "trainable_parameters": int(n_params), "processes": accelerator.num_processes,
        "flows": len(flows), "packets": int(flows.lengths.sum()),
    }
    if torch.cuda.is_available():
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model)
        if ema is not None:
            ema.copy_to(params)
        extra: dict[str, Any] = {"train_metrics": result, "active_columns": columns.tolist()}
        if lora:
            from peft import get_peft_model_state_dict
            from safetensors.torch import save_file

            adapter = {k: v.contiguous() for k, v in get_peft_model_state_dict(net).items()}
            save_file(adapter, str(output / "lora_adapter.safetensors"))
            net = net.merge_and_unload()
            extra["lora"] = {"adapter": "lora_adapter.safetensors", "merged": True}
        if base_meta is not None:
            extra["init_from"] = {"path": str(cfg["init_from"]), "model_id": base_meta["model_id"]}
        net.save_pretrained(str(output / WEIGHTS_DIR), safe_serialization=True)
        timing = timing_stats(flows)
        templates = build_templates(flows, int(dcfg["templates_per_class"]), seed=seed)
        if base_meta is not None:
            base_templates = load_templates(Path(cfg["init_from"]) / TEMPLATES_FILE, base_meta["classes"])
            base_timing = json.loads((Path(cfg["init_from"]) / TIMING_FILE).read_text())
            for c in flows.classes:
                if c not in data_classes:
                    templates[c], timing[c] = base_templates[c], base_timing[c]
        write_model_files(output, cfg, flows, seed, data, templates, timing, extra)
        remove_checkpoints(output, tr)
        log.info("trained %d steps in %.1fs (%.2f steps/s), final loss %.4f -> %s",
                 steps - start_step, seconds, result["steps_per_s"], loss_value, output)
    accelerator.wait_for_everyone()
    return result


def _checkpoint_identity(cfg: dict, flows: FlowSet, columns: np.ndarray) -> dict[str, Any]:
    """What a checkpoint's weights mean: resuming with anything else is refused."""
    return {"backend": cfg["backend"], "model": cfg.get("model"), "lora": cfg.get("lora"),
            "classes": list(flows.classes), "columns": len(flows.layout.columns),
            "active_columns": hashlib.sha1(np.asarray(columns, dtype=np.int64).tobytes()).hexdigest()[:16]}


def _check_resume(ckpt: Path, saved: dict, what: dict[str, Any]) -> None:
    """ValueError naming what differs between a checkpoint and this run (older checkpoints
    without the record are not checked)."""
    if "identity" not in saved:
        return
    diff = [k for k in what if saved["identity"].get(k) != what[k]]
    if diff:
        details = "; ".join(f"{k}: checkpoint {saved['identity'].get(k)!r}, now {what[k]!r}" for k in diff)
        raise ValueError(f"{ckpt}: cannot resume, the checkpoint was trained with a different "
                         f"{', '.join(diff)} ({details}); use the same data and config, or drop --resume")


def _save_checkpoint(accelerator, output: Path, step: int, identity: dict[str, Any] | None = None) -> None:
    """accelerate state (model, optimizer, lr schedule, EMA, RNG) + the step, atomically renamed."""
    final = output / CHECKPOINTS_DIR / f"step-{step}"
    tmp = output / CHECKPOINTS_DIR / f".tmp-step-{step}"
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json(tmp / "step.json", {"step": step, **({"identity": identity} if identity else {})})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
