"""The Stable Diffusion backend: SD 1.5-style UNet + LoRA fine-tuning, canny ControlNet sampling.

The paper's path: each flow is drawn as an nPrint image (``netdiffusion.image``), resized to the
model resolution, and a LoRA adapter on the UNet learns it with the per-class prompt
``pixelated network data, type-<i>``. Generation runs ``StableDiffusionControlNetPipeline`` with
the canny edge map of a real template flow of the class, resizes the output back to 1,024 rows x
nPrint width (nearest), snaps colours to the palette and keeps the template's presence mask.

Weights come only from a local directory or an ``s3://`` URI (``base_model_path``,
``controlnet_path``); nothing is fetched from a model hub. ``build_tiny: true`` builds a tiny
random pipeline locally so CI exercises the whole path in seconds.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from netdiffusion.dataset import write_json
from netdiffusion.image import (
    canny_edges,
    color_correct,
    mask_image,
    matrix_to_image,
    presence_mask,
)
from netdiffusion.model.config import CHOICES
from netdiffusion.model.data import build_templates, load_flows, timing_stats
from netdiffusion.model.train import (
    METRICS_FILE,
    _save_checkpoint,
    append_metrics,
    class_prompts,
    make_accelerator,
    remove_checkpoints,
    resume_state,
    write_model_files,
)

log = logging.getLogger(__name__)

LORA_FILE = "pytorch_lora_weights.safetensors"
TINY_BASE_DIR = "tiny_base"
# the parts of an SD 1.5 diffusers pipeline directory this backend loads
PIPELINE_PARTS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")


# -- weights from local dirs / S3 ------------------------------------------------------------------

def resolve_local(uri: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A local directory for ``uri``: itself, or an ``s3://bucket/prefix`` downloaded once to a cache.

    Honours ``AWS_ENDPOINT_URL`` (MinIO/SeaweedFS). Hub ids are refused: weights must be local."""
    text = str(uri)
    if text.startswith("s3://"):
        import boto3

        bucket, _, prefix = text[5:].partition("/")
        root = Path(cache or os.environ.get("NETDIFFUSION_CACHE", Path.home() / ".cache" / "netdiffusion"))
        target = root / "s3" / bucket / prefix
        marker = target / ".complete"
        if marker.exists():
            return target
        import botocore.exceptions

        s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
        paginator = s3.get_paginator("list_objects_v2")
        found = 0
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(prefix.rstrip("/")) + 1 :]
                    if not rel or rel.endswith("/"):  # the prefix itself, or a console "folder" marker object
                        continue
                    dest = target / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(dest))
                    found += 1
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            # no such bucket, wrong key or secret, endpoint unreachable: one line, not a traceback
            raise FileNotFoundError(f"{text}: cannot read weights from S3 ({exc})") from None
        if not found:
            raise FileNotFoundError(f"{text}: no objects under this S3 prefix")
        marker.touch()
        return target
    path = Path(text)
    if not path.is_dir():
        raise FileNotFoundError(f"{text}: weights must be a local directory or s3:// URI (no hub downloads)")
    return path


# -- tiny random pipeline (CI) ---------------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table (to build a CLIP vocabulary offline)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


# random-pipeline architectures: ``tiny`` for CI, ``sd15`` the real SD 1.5 shapes (GPU checks
# of the paper-size path without weights: nothing may be downloaded from a hub)
RANDOM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": {"text": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                      "num_attention_heads": 2, "projection_dim": 16}, "max_tokens": 32,
             "vae": {"block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4},
             "unet": {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8,
                      "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                      "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
                      "cross_attention_dim": 16, "attention_head_dim": 4}},
    "sd15": {"text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "projection_dim": 768}, "max_tokens": 77,
             "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "norm_num_groups": 32},
             "unet": {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "norm_num_groups": 32,
                      "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                      "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                      "cross_attention_dim": 768, "attention_head_dim": 8}},
}


def build_tiny_pipeline(path: str | os.PathLike, resolution: int = 32, seed: int = 0,
                        architecture: str = "tiny") -> Path:
    """Write a random SD 1.5-style pipeline (UNet, VAE, CLIP text model, tokenizer, scheduler).

    The CLIP tokenizer gets a byte-level vocabulary (no merges) written here, so nothing is
    downloaded; the models are random but have the real architectures and file layout.
    ``architecture="sd15"`` gives SD 1.5's layer sizes (about 1.1 B parameters)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if architecture not in RANDOM_ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(RANDOM_ARCHITECTURES)}")
    arch = RANDOM_ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    path = Path(path)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=arch["max_tokens"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), max_position_embeddings=arch["max_tokens"], **arch["text"],
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=resolution, **arch["vae"])
    unet = UNet2DConditionModel(sample_size=resolution // 8, in_channels=4, out_channels=4, **arch["unet"])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012, clip_sample=False)
    tokenizer.save_pretrained(path / "tokenizer")
    text_encoder.save_pretrained(path / "text_encoder")
    vae.save_pretrained(path / "vae")
    unet.save_pretrained(path / "unet")
    scheduler.save_pretrained(path / "scheduler")
    write_json(path / "model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]})
    return path


def _tiny_controlnet(unet):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16))


def _base_dir(model_dir: Path | None, cfg: dict) -> Path:
    if cfg.get("build_tiny") and not cfg.get("base_model_path"):
        if model_dir is None:
            raise ValueError("tiny base needs a model directory")
        return model_dir / TINY_BASE_DIR
    if not cfg.get("base_model_path"):
        raise ValueError("sd backend needs base_model_path (local dir or s3:// URI) or build_tiny: true")
    return check_pipeline_dir(resolve_local(cfg["base_model_path"]), cfg["base_model_path"])


def check_pipeline_dir(path: Path, uri: object = None) -> Path:
    """``path`` if it holds every part of a diffusers SD pipeline, else FileNotFoundError naming the
    missing parts (transformers would read a missing relative ``<dir>/tokenizer`` as a hub id)."""
    missing = [part for part in PIPELINE_PARTS if not (path / part).is_dir()]
    if missing:
        raise FileNotFoundError(f"{uri or path}: not a Stable Diffusion pipeline directory (no "
                                f"{', '.join(p + '/' for p in missing)}); base_model_path must be a local "
                                f"diffusers pipeline directory or s3:// URI (no hub downloads)")
    return path


def _controlnet_dir(uri: str) -> Path:
    path = resolve_local(uri)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{uri}: not a ControlNet directory (no config.json); controlnet_path must be "
                                f"a local diffusers ControlNet directory or s3:// URI (no hub downloads)")
    return path


def _absolute_weight_paths(cfg: dict) -> None:
    """Local ``base_model_path`` / ``controlnet_path`` checked now and stored absolute, so the model
    dir generates from any working directory and a wrong path fails before training, not after."""
    for key in ("base_model_path", "controlnet_path"):
        value = cfg.get(key)
        if value and not str(value).startswith("s3://"):
            path = resolve_local(value)
            if key == "base_model_path":
                check_pipeline_dir(path, value)
            else:
                _controlnet_dir(value)
            cfg[key] = str(path.resolve())


def flow_to_pixels(matrix: np.ndarray, resolution: int, palette: str, rows: int) -> np.ndarray:
    """A flow as the SD input image: nPrint image resized to ``resolution`` square, in [-1, 1]."""
    import cv2

    img = matrix_to_image(matrix, palette=palette, rows=rows)
    small = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 127.5 - 1.0


def mask_canny(mask: np.ndarray, resolution: int, palette: str, rows: int) -> np.ndarray:
    """Canny control image of a template's header layout, at model resolution.

    Templates keep only presence (no real bit values leave the training set), so the edges are
    those of the template drawn with every present bit unset: the header-region outlines that
    the paper's ControlNet uses to place headers."""
    import cv2

    layout_img = matrix_to_image(np.where(mask, 0, -1).astype(np.int8), palette=palette, rows=rows)
    small = cv2.resize(layout_img, (resolution, resolution), interpolation=cv2.INTER_NEAREST)
    return canny_edges(small)


# -- training --------------------------------------------------------------------------------------

def train_sd(data: Path, output: Path, cfg: dict, *, resume: bool, seed: int) -> dict[str, Any]:
    """LoRA fine-tuning of the UNet on flow images with per-class prompts."""
    import torch
    import torch.nn.functional as F
    from accelerate.utils import set_seed
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from tqdm.auto import tqdm
    from transformers import CLIPTextModel, CLIPTokenizer

    tr, dcfg = cfg["training"], cfg["data"]
    _absolute_weight_paths(cfg)
    accelerator = make_accelerator(tr)
    set_seed(seed, device_specific=False)
    output.mkdir(parents=True, exist_ok=True)
    resolution, palette, rows = int(cfg["resolution"]), cfg.get("palette", "paper"), int(dcfg["packets"])
    if cfg.get("build_tiny") and not cfg.get("base_model_path") and accelerator.is_main_process:
        if not (output / TINY_BASE_DIR / "model_index.json").exists():
            build_tiny_pipeline(output / TINY_BASE_DIR, resolution=resolution, seed=seed)
    accelerator.wait_for_everyone()
    base = _base_dir(output, cfg)
    flows = load_flows(data, packets=rows, max_flows_per_class=tr.get("max_flows_per_class"), seed=seed)
    prompts = class_prompts(flows.classes, cfg.get("prompt_template"))

    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base / "vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(base / "unet", local_files_only=True)
    noise_scheduler = DDPMScheduler.from_pretrained(base / "scheduler", local_files_only=True)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for frozen in (vae, text_encoder, unet):
        frozen.requires_grad_(False)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.to(accelerator.device)
    lora = cfg.get("lora") or {}
    unet.add_adapter(LoraConfig(r=int(lora.get("r", 4)), lora_alpha=int(lora.get("alpha", 4)),
                                init_lora_weights="gaussian", lora_dropout=float(lora.get("dropout", 0.0)),
                                target_modules=list(lora.get("target_modules", ["to_q", "to_k", "to_v", "to_out.0"]))))
    if tr.get("gradient_checkpointing"):
        unet.enable_gradient_checkpointing()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(tr["lr"]), weight_decay=float(tr.get("weight_decay", 0.0)))
    warmup = int(tr.get("warmup_steps", 0))  # constant learning rate after a linear warm-up
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _Warmup(warmup))
    unet, optimizer, lr_schedule = accelerator.prepare(unet, optimizer, lr_schedule)

    with torch.no_grad():
        ids = tokenizer([prompts[c] for c in flows.classes], padding="max_length",
                        max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        class_text = text_encoder(ids.to(accelerator.device))[0]

    metrics_path = output / METRICS_FILE
    # what the checkpoint's weights mean: resuming with other LoRA shapes, classes or base is refused
    what = {"backend": "sd", "base_model_path": cfg.get("base_model_path"), "lora": cfg.get("lora"),
            "classes": list(flows.classes), "prompts": prompts, "resolution": resolution, "palette": palette}
    start_step = resume_state(accelerator, output, metrics_path, what, resume)
    rng = np.random.default_rng(seed * 1000 + accelerator.process_index + start_step)
    steps, batch = int(tr["steps"]), int(tr["batch_size"])
    log_every, ckpt_every = max(1, int(tr.get("log_every", 10))), int(tr.get("checkpoint_every", 0))
    by_class = [np.flatnonzero(flows.class_index == c) for c in range(len(flows.classes))]
    started = time.time()
    loss_value, first = float("nan"), float("nan")
    unet.train()
    for step in tqdm(range(start_step, steps), desc="train-sd", disable=not accelerator.is_main_process,
                     initial=start_step, total=steps):
        picks = [int(rng.choice(by_class[int(rng.integers(len(by_class)))])) for _ in range(batch)]
        pixels = np.stack([flow_to_pixels(flows.flow(i), resolution, palette, rows) for i in picks])
        pixel_values = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(accelerator.device, dtype=weight_dtype)
        labels = torch.from_numpy(flows.class_index[picks]).to(accelerator.device)
        with accelerator.autocast():
            with torch.no_grad():
                latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch,), device=latents.device)
            noisy = noise_scheduler.add_noise(latents, noise, t)
            pred = unet(noisy, t, class_text[labels]).sample
            target = noise if noise_scheduler.config.prediction_type == "epsilon" else \
                noise_scheduler.get_velocity(latents, noise, t)
            loss = F.mse_loss(pred.float(), target.float())
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(accelerator.reduce(loss.detach(), reduction="mean"))
        first = loss_value if step == start_step else first
        done = step + 1
        if accelerator.is_main_process and (done % log_every == 0 or done == steps):
            elapsed = time.time() - started
            append_metrics(metrics_path, {"step": done, "loss": loss_value, "lr": float(lr_schedule.get_last_lr()[0]),
                                          "seconds": round(elapsed, 3),
                                          "steps_per_s": round((done - start_step) / max(elapsed, 1e-9), 4),
                                          "processes": accelerator.num_processes})
        if ckpt_every and (done % ckpt_every == 0 or (done == steps and tr.get("keep_checkpoints"))):
            _save_checkpoint(accelerator, output, done, what)
    seconds = time.time() - started
    accelerator.wait_for_everyone()
    result = {"backend": "sd", "steps": steps, "start_step": start_step, "final_loss": loss_value,
              "first_loss": first, "seconds": round(seconds, 3),
              "steps_per_s": round((steps - start_step) / max(seconds, 1e-9), 4),
              "trainable_parameters": int(sum(p.numel() for p in params)), "processes": accelerator.num_processes,
              "flows": len(flows)}
    if torch.cuda.is_available():
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if accelerator.is_main_process:
        lora_state = convert_state_dict_to_diffusers(get_peft_model_state_dict(accelerator.unwrap_model(unet)))
        StableDiffusionPipeline.save_lora_weights(str(output), unet_lora_layers=lora_state,
                                                  weight_name=LORA_FILE, safe_serialization=True)
        templates = build_templates(flows, int(dcfg["templates_per_class"]), seed=seed)
        write_model_files(output, cfg, flows, seed, data, templates, timing_stats(flows),
                          {"train_metrics": result, "lora_weights": LORA_FILE})
        remove_checkpoints(output, tr)
    accelerator.wait_for_everyone()
    return result


class _Warmup:
    """LambdaLR factor: linear warm-up over ``steps``, then 1 (a class: checkpoints keep its state)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(1.0, (step + 1) / self.steps) if self.steps > 0 else 1.0


# -- generation ------------------------------------------------------------------------------------

def sd_filler(model_dir: Path, meta: dict, *, steps: int | None, sampler: str | None):
    """A function (masks, class index, seed) -> matrices using LoRA + ControlNet sampling."""
    import cv2
    import torch
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        StableDiffusionControlNetPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    from netdiffusion.model.native import SAMPLERS

    cfg = meta["config"]
    base = _base_dir(model_dir, cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    unet = UNet2DConditionModel.from_pretrained(base / "unet", torch_dtype=dtype, local_files_only=True)
    if cfg.get("controlnet_path"):
        controlnet = ControlNetModel.from_pretrained(_controlnet_dir(cfg["controlnet_path"]), torch_dtype=dtype,
                                                     local_files_only=True)
    else:
        controlnet = _tiny_controlnet(unet).to(dtype)
    dcfg = cfg["diffusion"]
    name = sampler or dcfg.get("sampler", "ddim")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    scheduler = SAMPLERS[name].from_pretrained(base / "scheduler", local_files_only=True)
    pipe = StableDiffusionControlNetPipeline(
        vae=AutoencoderKL.from_pretrained(base / "vae", torch_dtype=dtype, local_files_only=True),
        text_encoder=CLIPTextModel.from_pretrained(base / "text_encoder", torch_dtype=dtype, local_files_only=True),
        tokenizer=CLIPTokenizer.from_pretrained(base / "tokenizer", local_files_only=True), unet=unet,
        controlnet=controlnet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(model_dir), weight_name=meta.get("lora_weights", LORA_FILE), local_files_only=True)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    resolution, palette, rows = int(cfg["resolution"]), cfg.get("palette", "paper"), int(meta["packets"])
    n_steps = int(steps or dcfg.get("sample_steps", 30))
    classes = meta["classes"]

    control_kind = cfg.get("control", "canny")
    if control_kind not in CHOICES["control"]:
        raise ValueError(f"unknown control image kind {control_kind!r} ({', '.join(CHOICES['control'])})")

    def control_for(m: np.ndarray) -> np.ndarray:
        if control_kind == "canny":
            return mask_canny(m, resolution, palette, rows)
        return cv2.resize(mask_image(presence_mask(m, rows=rows)), (resolution, resolution),
                          interpolation=cv2.INTER_NEAREST)

    def fill(masks: list[np.ndarray], class_index: int, batch_seed: list[int],
             directions: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """``directions`` are accepted for the common interface; the image model does not use them."""
        control = np.stack([control_for(m) for m in masks]).astype(np.float32) / 255.0
        control_t = torch.from_numpy(control).permute(0, 3, 1, 2).to(device, dtype=dtype)
        gen = torch.Generator(device).manual_seed(int(np.random.SeedSequence(batch_seed).generate_state(1)[0]))
        images = pipe(prompt=[meta["prompts"][classes[class_index]]] * len(masks), image=control_t,
                      height=resolution, width=resolution, num_inference_steps=n_steps,
                      guidance_scale=float(dcfg.get("guidance_scale", 7.5)),
                      controlnet_conditioning_scale=float(dcfg.get("controlnet_conditioning_scale", 1.0)),
                      generator=gen, output_type="np").images
        out = []
        for img, m in zip(images, masks, strict=True):
            u8 = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            # hires resize back to 1,024 rows x nPrint width, as the paper did
            full = cv2.resize(u8, (m.shape[1], rows), interpolation=cv2.INTER_NEAREST)
            values, _ = color_correct(full, palette=palette)
            values = values[: len(m)]
            # keep the template's structure: absent where it is absent, unset where a present bit decoded absent
            values = np.where(m, np.where(values == -1, 0, values), -1).astype(np.int8)
            out.append(values)
        return out

    return fill
