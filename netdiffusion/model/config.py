"""Model configuration: YAML presets (``tiny``, ``default``, ``gpu``, ``sd-tiny``, ``sd``) plus overrides.

Every resolved config is checked against the presets of its backend: a key no preset (nor
:data:`OPTIONAL_KEYS`) has is an error naming the known keys of its section, and each value must
have its preset's type (counts such as steps or dims at least 1). Errors are :class:`ConfigError`."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from netdiffusion.image import PALETTES

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))

# keys no preset sets but training / generation read: section -> {key: type}
# (a type of None accepts any value; "section" a nested mapping)
OPTIONAL_KEYS: dict[str, dict[str, Any]] = {
    "": {"init_from": str, "lora": "section", "generation": "section", "prompt_template": str,
         "preset": str, "backend": str},
    "training": {"keep_checkpoints": bool},
    "lora": {"r": int, "alpha": int, "target_modules": list, "dropout": float},
    "generation": {"batch": int},
}
# integer fields for which 0 (or less) means nothing: at least 1
AT_LEAST_ONE = {
    "model.dim", "model.layers", "model.heads", "model.ff_mult",
    "diffusion.train_timesteps", "diffusion.sample_steps",
    "training.steps", "training.batch_size", "training.log_every", "training.max_rows",
    "training.max_flows_per_class", "data.packets", "data.templates_per_class",
    "resolution", "lora.r", "lora.alpha", "generation.batch",
}
# numeric fields that may be 0 but not negative
NON_NEGATIVE = {"training.checkpoint_every", "training.warmup_steps", "training.weight_decay",
                "training.ema_decay", "diffusion.guidance_scale", "diffusion.class_dropout",
                "diffusion.controlnet_conditioning_scale", "lora.dropout"}
CHOICES = {"training.mixed_precision": ("no", "fp16", "bf16"),
           # generation's samplers (model.native.SAMPLERS) and diffusers DDPMScheduler's schedules:
           # checked here, or a typo trains a model that generate then refuses / a traceback
           "diffusion.sampler": ("ddim", "ddpm", "dpmsolver", "unipc"),
           "diffusion.beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid"),
           # sd backend: the control images model.sd.sd_filler draws, and the image codec's palettes
           "control": ("canny", "mask"),
           "palette": tuple(PALETTES)}


class ConfigError(ValueError):
    """A config that cannot be used: unreadable file, unknown key, wrong type or range."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: override wins; nested dicts merge instead of replacing."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a mapping")
    return data


def _schema(backend: str) -> dict[str, dict[str, Any]]:
    """section ('' = top level) -> {key: example value or type} from every preset of ``backend``."""
    schema: dict[str, dict[str, Any]] = {s: dict(keys) for s, keys in OPTIONAL_KEYS.items()}
    for name in PRESETS:
        preset = _read(CONFIG_DIR / f"{name}.yaml")
        if preset.get("backend", "native") != backend:
            continue
        for key, value in preset.items():
            if isinstance(value, dict):
                schema[""][key] = "section"
                section = schema.setdefault(key, {})
                for k, v in value.items():
                    section.setdefault(k, v)
            else:
                schema[""].setdefault(key, value)
    return schema


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(kind, kind.__name__)


def _check_value(name: str, value: Any, example: Any) -> Any:
    """``value`` checked (and for numbers given as text, converted) against a preset's ``example``."""
    kind = example if isinstance(example, type) else type(example)
    if example is None or value is None:
        if value is None and name in AT_LEAST_ONE | NON_NEGATIVE and name != "training.max_flows_per_class":
            raise ConfigError(f"config {name}: must be {_type_name(int)}, not null")
        return value
    if kind is float and isinstance(value, str):
        try:
            value = float(value)  # YAML reads 1e-4 (no dot) as text
        except ValueError:
            pass
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"config {name}: must be {_type_name(kind)}, not {value!r}")
    if name in AT_LEAST_ONE and value < 1:
        raise ConfigError(f"config {name}: must be at least 1, not {value!r}")
    if name in NON_NEGATIVE and value < 0:
        raise ConfigError(f"config {name}: must not be negative, not {value!r}")
    if name in CHOICES and value not in CHOICES[name]:
        raise ConfigError(f"config {name}: must be one of {', '.join(CHOICES[name])}, not {value!r}")
    return value


def validate_config(cfg: dict[str, Any], backend: str) -> dict[str, Any]:
    """Check a merged config against the presets of ``backend``; returns it (numbers normalised)."""
    schema = _schema(backend)
    for key, value in list(cfg.items()):
        if key not in schema[""]:
            raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(sorted(schema['']))}")
        if schema[""][key] == "section":
            if value is None and key in ("lora", "generation"):
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config {key}: must be a mapping of {', '.join(sorted(schema[key]))}, "
                                  f"not {value!r}")
            for sub, subvalue in value.items():
                if sub not in schema[key]:
                    raise ConfigError(f"unknown config key '{key}.{sub}'; known keys of {key}: "
                                      f"{', '.join(sorted(schema[key]))}")
                value[sub] = _check_value(f"{key}.{sub}", subvalue, schema[key][sub])
        else:
            cfg[key] = _check_value(key, value, schema[""][key])
    if "prompt_template" in cfg:
        _check_prompt_template(cfg["prompt_template"])
    if backend == "sd" and (cfg.get("training") or {}).get("ema_decay"):
        raise ConfigError("config training.ema_decay: the sd backend keeps no EMA of its LoRA weights (use 0.0)")
    if backend == "sd" and cfg.get("init_from"):
        raise ConfigError("config init_from: only the native backend starts from a trained model; the sd backend "
                          "trains a LoRA on base_model_path (drop init_from)")
    if backend == "native":
        m = cfg.get("model", {})
        if m.get("dim", 0) % max(1, m.get("heads", 1)):
            raise ConfigError(f"config model.dim {m['dim']}: must be a multiple of model.heads {m['heads']}")
    return cfg


def _check_prompt_template(template: Any) -> None:
    """The per-class prompt template must format with ``{index}`` / ``{label}`` and tell classes apart."""
    if not isinstance(template, str):
        raise ConfigError(f"config prompt_template: must be a string with {{index}} or {{label}}, not {template!r}")
    try:
        first, second = template.format(index=0, label="a"), template.format(index=1, label="b")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"config prompt_template {template!r}: cannot be formatted ({type(exc).__name__}: {exc}); "
                          f"it may use {{index}} and {{label}}") from None
    if first == second:
        raise ConfigError(f"config prompt_template {template!r}: gives every class the same prompt; "
                          f"use {{index}} or {{label}}")


def load_config(config: str | os.PathLike | dict[str, Any] | None = None, backend: str = "native"
                ) -> dict[str, Any]:
    """Resolve ``config`` (preset name, YAML/JSON path, or dict of overrides) to a full config.

    A dict may name its base with ``preset`` (default: ``default`` for native, ``sd-tiny`` for sd);
    a file may too, so a user file only lists what it changes. Raises :class:`ConfigError` for an
    unknown key or a value of the wrong type or range, FileNotFoundError for a missing file."""
    default_preset = "default" if backend == "native" else "sd-tiny"
    if config is None:
        overrides: dict[str, Any] = {}
    elif isinstance(config, dict):
        overrides = copy.deepcopy(config)
    elif str(config) in PRESETS:
        overrides = {"preset": str(config)}
    else:
        path = Path(config)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such config file or preset (presets: {', '.join(PRESETS)})")
        overrides = _read(path)
    preset = overrides.pop("preset", default_preset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    merged = deep_merge(_read(CONFIG_DIR / f"{preset}.yaml"), overrides)
    merged["preset"] = preset
    if merged.get("backend", backend) != backend:
        raise ConfigError(f"config preset {preset!r} is for backend {merged['backend']!r}, not {backend!r}")
    merged["backend"] = backend
    return validate_config(merged, backend)
