"""Export a dataset to nPrint's CSV format: DIR/<label>/<flow_id>.nprint, one file per flow,
first column src_ip, then one column per header bit (1 / 0 / -1)."""

from __future__ import annotations

import argparse
import json

from netdiffusion.commands import INPUT_ERRORS, input_error

HELP = "dataset -> nPrint CSV files (one per flow)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, metavar="DATASET", help="dataset directory")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--no-timestamps", action="store_true",
                        help="no tv_sec/tv_usec columns: src_ip and the bits only, as the original NetDiffusion "
                             "code reads them (a round trip then loses the inter-arrival times)")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.nprint_csv import export_dataset

    try:
        summary = export_dataset(args.input, args.output, timestamps=not args.no_timestamps)
    except INPUT_ERRORS as exc:  # no such dataset, ...
        return input_error("export-nprint", exc)
    print(json.dumps(summary, indent=2))
    return 0
