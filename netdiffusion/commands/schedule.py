"""Create a recurring ``refresh`` run on Kubeflow Pipelines (cron in KFP's 6-field format)."""

from __future__ import annotations

import argparse

from netdiffusion.commands.kfp_options import add_pipeline_arguments, run_and_report
from netdiffusion.commands.submit import add_kfp_client_arguments, check_arguments

HELP = "schedule recurring refresh runs on Kubeflow Pipelines (cron)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cron", default="0 0 3 * * 0", help="6-field cron (seconds first), KFP format")
    add_pipeline_arguments(parser, default_pipeline="refresh", host_help="KFP API endpoint (required)")
    parser.add_argument("--job-name", default=None, help="recurring run name")
    parser.add_argument("--max-concurrency", type=int, default=1)
    add_kfp_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if (status := check_arguments("schedule", args)) is not None:
        return status
    from pipelines.submit import schedule_from_args

    return run_and_report("schedule", schedule_from_args, args)
