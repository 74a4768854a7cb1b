"""Import nPrint CSV files (nPrint's own output or the original NetDiffusion .nprint files) into a
dataset. Each file becomes one flow sample (or chunks of --flow-size rows); columns a file lacks
(e.g. NetDiffusion's dropped address bits, or a missing ipv6 header) import as absent (-1)."""

from __future__ import annotations

import argparse
import json

HELP = "nPrint CSV files -> dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                        help="nPrint CSV files or folders (*.nprint, *.csv)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="dataset directory")
    parser.add_argument("--label", help="label for every flow (default: the label an export recorded in "
                                        "labels.json, else the <label>_NN file name prefix, else the parent folder)")
    parser.add_argument("--macro", help="macro service for every flow (default: the export's labels.json, else empty)")
    parser.add_argument("--flow-size", type=int, help="rows per flow sample (default: one flow per file)")
    parser.add_argument("--headers", default="ipv4,ipv6,tcp,udp,icmp", help="dataset layout headers")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.commands import input_error
    from netdiffusion.nprint_csv import import_files

    try:
        summary = import_files(args.input, args.output, label=args.label, macro=args.macro,
                               flow_size=args.flow_size, headers=[h.strip() for h in args.headers.split(",") if h.strip()])
    except (FileNotFoundError, ValueError) as exc:  # no files to import, a bad --headers
        return input_error("import-nprint", exc)
    print(json.dumps(summary, indent=2))
    return 0 if summary["files_read"] else 1
