"""Submit a pipeline run to Kubeflow Pipelines (``--host``), or run it locally without one.

``generate`` (default) makes pcaps from a registered model (``--model models:/netdiffusion@champion``);
``refresh`` retrains from ``--input``. Extra pipeline parameters: ``--param name=JSON``.
"""

from __future__ import annotations

import argparse

from netdiffusion.commands.kfp_options import add_pipeline_arguments, run_and_report

HELP = "submit the generate/refresh pipeline to Kubeflow Pipelines (or run it locally without --host)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(parser, default_pipeline="generate",
                           host_help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow; none = run locally")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--out", default="out", help="output directory for local runs")
    parser.add_argument("--wait", action="store_true", help="wait for the KFP run to finish")


def run(args: argparse.Namespace) -> int:
    from pipelines.submit import submit_from_args

    return run_and_report("submit", submit_from_args, args)
