"""Model configuration: YAML presets (``tiny``, ``default``, ``gpu``, ``sd-tiny``, ``sd``) plus overrides."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
PRESETS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))


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
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: config must be a mapping")
    return data


def load_config(config: str | os.PathLike | dict[str, Any] | None = None, backend: str = "native"
                ) -> dict[str, Any]:
    """Resolve ``config`` (preset name, YAML/JSON path, or dict of overrides) to a full config.

    A dict may name its base with ``preset`` (default: ``default`` for native, ``sd-tiny`` for sd);
    a file may too, so a user file only lists what it changes."""
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
            raise FileNotFoundError(f"{path}: no such config file (presets: {', '.join(PRESETS)})")
        overrides = _read(path)
    preset = overrides.pop("preset", default_preset)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    merged = deep_merge(_read(CONFIG_DIR / f"{preset}.yaml"), overrides)
    merged["preset"] = preset
    if merged.get("backend", backend) != backend:
        raise ValueError(f"config preset {preset!r} is for backend {merged['backend']!r}, not {backend!r}")
    merged["backend"] = backend
    return merged
