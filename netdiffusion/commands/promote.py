"""Promote a registered model version: set ``challenger``, move ``champion`` only if it is better.

Compares the candidate's evaluation metrics with the current champion's (default: lower
``similarity.overall.jsd`` and higher mean TSTR accuracy) and requires clean validation.
Examples::

    netdiffusion promote --model netdiffusion --version 3
    netdiffusion promote --run 0f3c...  --metric similarity.overall.jsd:min
"""

from __future__ import annotations

import argparse
import json

HELP = "promote a model version to champion if its evaluation beats the current one (MLflow aliases)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="registered model name (default: $NETDIFFUSION_MODEL_NAME or 'netdiffusion')")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="model version to promote")
    which.add_argument("--run", help="MLflow run id whose registered version to promote")
    parser.add_argument("--metric", action="append", default=None, metavar="NAME:min|max",
                        help="comparison metric (report.json key, * averages matches); repeatable; "
                             "default: similarity.overall.jsd:min and "
                             "utility.train_synthetic_test_real.*.*.accuracy:max")
    parser.add_argument("--allow-unvalidated", action="store_true",
                        help="do not require clean validation of the candidate")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
                                                             "or sqlite:///<out>/mlflow.db)")
    parser.add_argument("--out", default="out", help="output dir holding the local mlflow.db")
    parser.add_argument("--config", default=None, help="tracking settings file (YAML/JSON)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.tracking.registry import parse_metric_specs, promote
    from netdiffusion.tracking.settings import ConfigError, TrackingSettings

    try:
        settings = TrackingSettings.load(args.config, out=args.out, tracking_uri=args.tracking_uri)
        settings.require_store()  # promoting needs the registry that holds the model: never a new, empty one
        settings.check()
        metrics = parse_metric_specs(args.metric)
        decision = promote(args.model or settings.model_name, args.version, args.run, metrics=metrics,
                           require_clean_validation=not args.allow_unvalidated, settings=settings)
    except (ConfigError, LookupError, ValueError) as exc:
        print(f"netdiffusion promote: {exc}")
        return 2
    if args.json:
        print(json.dumps(decision, indent=2))
        return 0
    verdict = "is now champion" if decision["promoted"] else "stays challenger"
    print(f"{decision['model']} v{decision['version']} {verdict}: {decision['reason']}")
    for name, row in decision["metrics"].items():
        print(f"  {name} ({row['goal']}): candidate {_fmt(row['candidate'])}  champion {_fmt(row['champion'])}"
              f"  -> {row['verdict']}")
    print(f"  validation clean: {decision['validation_clean']}; champion: v{decision['champion_after']}"
          if decision["champion_after"] is not None else f"  validation clean: {decision['validation_clean']}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
