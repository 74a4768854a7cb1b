"""Generate synthetic flows per class from a trained model into an encoded dataset (+ PNG images).

One call per class in separate processes produces exactly the flows of one call for all classes."""

from __future__ import annotations

import argparse
import json

from netdiffusion.commands import INPUT_ERRORS, class_names, error, input_error

HELP = "generate synthetic flows per class from a trained model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--output", required=True, help="dataset directory to write")
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all)")
    parser.add_argument("--count", type=int, default=10, help="flows per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=None, help="flows per sampling batch")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: model config)")
    parser.add_argument("--sampler", default=None, help="ddim, ddpm, dpmsolver, unipc (default: model config)")
    parser.add_argument("--no-images", action="store_true", help="skip the PNG images")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.model.generate import generate

    for flag, value in (("--count", args.count), ("--batch", args.batch), ("--steps", args.steps)):
        if value is not None and value < 1:
            return error("generate", f"{flag} {value}: must be at least 1")
    try:
        classes = class_names(args.classes)
        stats = generate(args.model, args.output, classes=classes, count=args.count, seed=args.seed,
                         batch=args.batch, steps=args.steps, sampler=args.sampler, images=not args.no_images)
    except INPUT_ERRORS as exc:  # not a model, unknown class or sampler, ...
        return input_error("generate", exc)
    print(json.dumps(stats, indent=2))
    return 0
