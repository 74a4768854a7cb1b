"""Run the whole ``refresh`` pipeline on this machine (Kubeflow Pipelines' local runner).

Encodes the sample captures, trains the CPU model, generates, repairs and validates pcaps for
every class, evaluates them and registers the model in the local MLflow store, all under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from netdiffusion.commands import class_names

HELP = "run the refresh pipeline locally (kfp.local): encode, train, generate, repair, validate, evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out", help="output directory")
    parser.add_argument("--input", default=None,
                        help="folder or s3:// prefix with manifest.csv (default: data/sample, else shared data)")
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: preset's, all)")
    parser.add_argument("--preset", choices=["default", "tiny"], default="default",
                        help="run size: default (CPU model, about 5 min on 2 quiet cores) or tiny (smoke test)")
    parser.add_argument("--count", type=int, default=None, help="flows to generate per class")
    parser.add_argument("--packets", type=int, default=None, help="packets per flow when encoding")
    parser.add_argument("--config", default=None, help="model config preset or file (default: preset's)")
    parser.add_argument("--backend", choices=["native", "sd"], default="native",
                        help="model backend; sd needs an sd config, e.g. --config sd-tiny (CPU) or sd (GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tcpreplay", action="store_true", help="also replay pcaps in validation (root)")


def run(args: argparse.Namespace) -> int:
    from pipelines.local import format_summary, run_refresh

    for flag, value, what in (("--count", args.count, "flows per class"), ("--packets", args.packets, "packets per flow")):
        if value is not None and value < 1:  # refused up front, not after encoding and training
            print(f"netdiffusion run: {flag} must be >= 1 ({what}), got {value}", file=sys.stderr)
            return 2
    try:
        classes = class_names(args.classes)
    except ValueError as exc:
        print(f"netdiffusion run: {exc}", file=sys.stderr)
        return 2
    if args.input and "://" not in args.input and not Path(args.input).exists():
        print(f"netdiffusion run: {args.input}: input folder not found", file=sys.stderr)
        return 2
    if args.input and "://" not in args.input and Path(args.input).is_file():
        # the pipeline reads <folder>/manifest.csv: the manifest itself names its folder
        if Path(args.input).name != "manifest.csv":
            print(f"netdiffusion run: {args.input}: --input is a folder (holding manifest.csv or class "
                  "folders of captures), not a file", file=sys.stderr)
            return 2
        args.input = str(Path(args.input).parent)
    try:
        summary = run_refresh(args.out, input_uri=args.input, classes=classes, preset=args.preset,
                              count=args.count, packets=args.packets, config=args.config, seed=args.seed,
                              tcpreplay=args.tcpreplay, backend=args.backend)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        # kfp.local already printed the failing task's log; end with one line that says what failed
        print(f"netdiffusion run: {exc} (task logs above; artifacts under {args.out}/kfp/)", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0
