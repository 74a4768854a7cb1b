"""Submit a pipeline run to Kubeflow Pipelines (``--host``), or run it locally without one.

``generate`` (default) makes pcaps from a registered model (``--model models:/netdiffusion@champion``);
``refresh`` retrains from ``--input``. Extra pipeline parameters: ``--param name=JSON``.
"""

from __future__ import annotations

import argparse
import sys

from netdiffusion.commands import class_names
from netdiffusion.commands.kfp_options import add_pipeline_arguments, run_and_report

HELP = "submit the generate/refresh pipeline to Kubeflow Pipelines (or run it locally without --host)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser, default_pipeline="generate",
                           host_help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow; none = run locally")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--out", default="out", help="output directory for local runs")
    parser.add_argument("--wait", action="store_true", help="wait for the KFP run to finish")
    add_kfp_client_arguments(parser)


def add_kfp_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Timeout and namespace of the KFP client (shared with ``schedule``)."""
    parser.add_argument("--kfp-timeout", type=float, default=None, metavar="SECONDS",
                        help="timeout of each KFP API call (default: $NETDIFFUSION_KFP_TIMEOUT_S or 30)")
    for action in parser._actions:  # --namespace comes from kfp_options; unset, $KFP_NAMESPACE applies
        if action.dest == "namespace":
            action.help = "KFP namespace (multi-user installs; default: $KFP_NAMESPACE)"


def check_arguments(command: str, args: argparse.Namespace) -> int | None:
    """Exit status 2 with one line for arguments that are wrong whatever the pipeline does."""
    if args.count is not None and args.count < 1:
        print(f"netdiffusion {command}: --count must be >= 1 (flows per class), got {args.count}", file=sys.stderr)
        return 2
    if args.kfp_timeout is not None and not args.kfp_timeout > 0:
        print(f"netdiffusion {command}: --kfp-timeout must be > 0 seconds, got {args.kfp_timeout:g}",
              file=sys.stderr)
        return 2
    try:
        class_names(args.classes)
    except ValueError as exc:
        print(f"netdiffusion {command}: {exc}", file=sys.stderr)
        return 2
    return None


def run(args: argparse.Namespace) -> int:
    if (status := check_arguments("submit", args)) is not None:
        return status
    from pipelines.submit import submit_from_args

    return run_and_report("submit", submit_from_args, args)
