"""Evaluate generated traffic against held-out real traffic: per-field JSD/TVD/Hellinger with a
real-vs-real floor and a random-bits baseline, flow statistics, ML utility (TRTR, TSTR, TRTS,
mixing, class balancing), generation variation and memorisation. Writes report.json, report.md
and PNGs to --output."""

from __future__ import annotations

import argparse

HELP = "statistical fidelity, ML utility, variation and privacy report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", required=True, help="held-out real dataset (encoded Parquet directory)")
    parser.add_argument("--synthetic", required=True, help="generated (normally repaired) dataset")
    parser.add_argument("--train", required=True, help="real dataset the model was trained on")
    parser.add_argument("--output", required=True, help="report directory")
    parser.add_argument("--packets-k", type=int, default=1024,
                        help="first K packets per flow for all comparisons and ML features")
    parser.add_argument("--classes", nargs="*", default=None,
                        help="only these classes (labels); space or comma separated")
    parser.add_argument("--models", default="rf,dt,svm", help="classifiers, comma separated: rf, dt, svm")
    parser.add_argument("--tasks", default="micro,macro", help="micro (application) and/or macro (service)")
    parser.add_argument("--max-features", type=int, default=4096,
                        help="ML features kept (highest-variance packet/bit cells of the training data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: K<=64, fewer mixing rates and flows")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--max-flows-per-class", type=int, default=None,
                        help="evaluate a class with more flows on a random sample of this many, per dataset "
                             "(default 2000; 0: every flow)")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.commands import INPUT_ERRORS, input_error
    from netdiffusion.evaluate import evaluate
    from netdiffusion.evaluate.core import DEFAULT_MAX_FLOWS_PER_CLASS

    classes = [c for part in args.classes for c in part.split(",") if c] if args.classes else None
    cap = DEFAULT_MAX_FLOWS_PER_CLASS if args.max_flows_per_class is None else args.max_flows_per_class
    try:
        report = evaluate(
            args.real, args.synthetic, args.train, args.output,
            packets_k=args.packets_k, classes=classes, models=args.models.split(","),
            tasks=[t for t in args.tasks.split(",") if t], seed=args.seed, quick=args.quick,
            max_features=args.max_features, plots=not args.no_plots, max_flows_per_class=cap,
        )
    except INPUT_ERRORS as exc:
        return input_error("evaluate", exc)
    sim = report["similarity"]
    tstr = report["utility"].get("train_synthetic_test_real", {})
    print(f"similarity JSD {sim['overall']['jsd']} (floor {sim['floor']['jsd']}, "
          f"random {sim['random_baseline']['jsd']})")
    for task, models in tstr.items():
        print(f"TSTR {task}: " + ", ".join(f"{m} {v.get('accuracy')}" for m, v in models.items()))
    print(f"report: {args.output}/report.md")
    return 0
