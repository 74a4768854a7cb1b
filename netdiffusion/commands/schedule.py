"""Create a recurring ``refresh`` run on Kubeflow Pipelines (cron in KFP's 6-field format)."""

from __future__ import annotations

import argparse
import sys

HELP = "schedule recurring refresh runs on Kubeflow Pipelines (cron)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cron", default="0 0 3 * * 0", help="6-field cron (seconds first), KFP format")
    parser.add_argument("--host", default=None, help="KFP API endpoint (required)")
    parser.add_argument("--pipeline", choices=["refresh", "generate"], default="refresh")
    parser.add_argument("--classes", default=None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--input", default=None, help="dataset s3:// prefix the refresh reads")
    parser.add_argument("--model", default=None)
    parser.add_argument("--output-uri", default=None)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--experiment", default="netdiffusion")
    parser.add_argument("--job-name", default=None, help="recurring run name")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--max-concurrency", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    from pipelines.submit import schedule_from_args

    try:
        result = schedule_from_args(args)
    except Exception as exc:  # noqa: BLE001 (API/connection errors from kfp: one clear line, not a traceback)
        print(f"netdiffusion schedule: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    print(result["message"])
    return 0 if result.get("ok", True) else 1
