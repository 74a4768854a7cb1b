"""Submit a pipeline run to Kubeflow Pipelines (``--host``), or run it locally without one.

``generate`` (default) makes pcaps from a registered model (``--model models:/netdiffusion@champion``);
``refresh`` retrains from ``--input``. Extra pipeline parameters: ``--param name=JSON``.
"""

from __future__ import annotations

import argparse
import sys

HELP = "submit the generate/refresh pipeline to Kubeflow Pipelines (or run it locally without --host)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", choices=["generate", "refresh"], default="generate")
    parser.add_argument("--host", default=None, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all)")
    parser.add_argument("--count", type=int, default=None, help="flows per class")
    parser.add_argument("--model", default=None, help="model URI for generate (models:/NAME@alias, dir, s3://)")
    parser.add_argument("--input", default=None, help="dataset folder/s3:// prefix for refresh")
    parser.add_argument("--output-uri", default=None, help="where generate publishes pcaps + Parquet")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any other pipeline parameter (VALUE parsed as JSON when possible)")
    parser.add_argument("--experiment", default="netdiffusion", help="KFP experiment name")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs)")
    parser.add_argument("--out", default="out", help="output directory for local runs")
    parser.add_argument("--wait", action="store_true", help="wait for the KFP run to finish")


def run(args: argparse.Namespace) -> int:
    from pipelines.submit import submit_from_args

    try:
        result = submit_from_args(args)
    except Exception as exc:  # noqa: BLE001 (API/connection errors from kfp: one clear line, not a traceback)
        print(f"netdiffusion submit: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    print(result["message"])
    return 0 if result.get("ok", True) else 1
