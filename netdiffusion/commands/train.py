"""Train a generative model (native CPU diffusion transformer, or SD + LoRA) on an encoded dataset.

Runs the same under ``torchrun --nproc_per_node N -m netdiffusion train ...`` or
``accelerate launch -m netdiffusion train ...`` for data-parallel training (gloo on CPU)."""

from __future__ import annotations

import argparse
import json
import os

from netdiffusion.commands import INPUT_ERRORS, error, input_error

HELP = "train a diffusion model on an encoded dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="encoded dataset directory")
    parser.add_argument("--output", required=True, help="model directory to write")
    parser.add_argument("--backend", choices=["native", "sd"], default="native")
    parser.add_argument("--config", default=None,
                        help="preset (tiny, default, gpu, sd-tiny, sd) or a YAML/JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. training.steps=100 (JSON values)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--seed", type=int, default=0)


def parse_overrides(items: list[str]) -> dict:
    """``a.b=1`` strings -> nested dict (values parsed as JSON when possible)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        parts = key.split(".")
        if not all(parts):
            raise ValueError(f"--set {item!r}: empty key part in {key!r}")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {p!r} was already set to a value")
        node[parts[-1]] = value
    return out


def run(args: argparse.Namespace) -> int:
    from netdiffusion.model.config import PRESETS, load_config
    from netdiffusion.model.train import train

    if args.seed < 0:
        return error("train", f"--seed {args.seed}: must not be negative")
    config = args.config
    try:
        if args.set:
            base = load_config(config, backend=args.backend) if config and config not in PRESETS else None
            overrides = parse_overrides(args.set)
            if base is not None:
                from netdiffusion.model.config import deep_merge

                config = deep_merge(base, overrides)
            else:
                config = {**({"preset": config} if config else {}), **overrides}
        result = train(args.data, args.output, backend=args.backend, config=config, resume=args.resume,
                       seed=args.seed)
    except INPUT_ERRORS as exc:  # bad config / --set, no such dataset, nothing to resume, ...
        return input_error("train", exc)
    if os.environ.get("RANK", "0") == "0":  # one summary under torchrun / accelerate launch
        print(json.dumps(result, indent=2))
    return 0
