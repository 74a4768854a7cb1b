"""Options and error handling shared by ``submit`` and ``schedule``: both fill the same pipeline parameters.

Not a subcommand (``netdiffusion/cli.py`` lists those explicitly); kept here so the two stay in step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def add_pipeline_arguments(parser: argparse.ArgumentParser, *, default_pipeline: str, host_help: str) -> None:
    """The KFP endpoint, the pipeline and its parameters, identical for a one-off run and a recurring one."""
    parser.add_argument("--pipeline", choices=["generate", "refresh"], default=default_pipeline)
    parser.add_argument("--host", default=None, help=host_help)
    parser.add_argument("--classes", default=None, help="comma-separated classes (default: all)")
    parser.add_argument("--count", type=int, default=None, help="flows per class")
    parser.add_argument("--model", default=None, help="model URI for generate (models:/NAME@alias, dir, s3://)")
    parser.add_argument("--input", default=None, help="dataset folder/s3:// prefix for refresh")
    parser.add_argument("--output-uri", default=None, help="where generate publishes pcaps + Parquet")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any other pipeline parameter (VALUE parsed as JSON when possible)")
    parser.add_argument("--experiment", default="netdiffusion", help="KFP experiment name")
    parser.add_argument("--namespace", default=None, help="KFP namespace (multi-user installs)")


def run_and_report(command: str, action: Callable[[argparse.Namespace], dict[str, Any]],
                   args: argparse.Namespace) -> int:
    """Call ``action(args)``; print its message, or one clear line for API/connection errors (no traceback)."""
    try:
        result = action(args)
    except Exception as exc:  # noqa: BLE001 (API/connection errors from kfp: one clear line, not a traceback)
        print(f"netdiffusion {command}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    print(result["message"])
    return 0 if result.get("ok", True) else 1
