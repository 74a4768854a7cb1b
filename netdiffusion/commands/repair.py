"""Repair generated (or real) nPrint flows into protocol-valid pcaps, one per flow."""

from __future__ import annotations

import argparse
import json

from netdiffusion.commands import INPUT_ERRORS, error, input_error

HELP = "repair generated flows into protocol-valid pcaps (+ repair_report.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, help="dataset directory (generated or encoded)")
    parser.add_argument("--output", "-o", required=True, help="directory for <label>/<flow_id>.pcap")
    parser.add_argument("--dataset-output", help="also write the repaired rows as a dataset here")
    parser.add_argument("--anonymize", action="store_true", help="remap endpoints into private ranges")
    parser.add_argument("--private-v4", default="10.0.0.0/8", help="IPv4 range for --anonymize")
    parser.add_argument("--private-v6", default="fd00::/8", help="IPv6 range for --anonymize")
    parser.add_argument("--payload", choices=("zero", "random"), default="zero", help="payload bytes")
    parser.add_argument("--merged", action="store_true",
                        help="also write one merged pcap per class (flows 1 s apart; a repeated TCP/UDP "
                             "conversation gets a new initiator port there)")
    parser.add_argument("--stack", choices=("flow", "packet"), default="flow",
                        help="decide the protocol stack per flow or per packet (highest share of present bits)")
    parser.add_argument("--mtu", type=int, default=1500, help="largest IP packet, 1280-65535 (65535 keeps GRO/TSO captures)")
    parser.add_argument("--gaps", choices=("close", "keep"), default="close",
                        help="close capture gaps in TCP sequences, or keep gaps the trace confirms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part-rows", type=int, default=None,
                        help="repair a larger class this many rows (whole flows) at a time: bounds memory "
                             "(default 131072, ~1.5 GB peak)")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.dataset import PART_ROWS
    from netdiffusion.repair import repair_dataset

    if args.part_rows is not None and args.part_rows < 1:
        return error("repair", f"--part-rows {args.part_rows}: must be at least 1")
    try:
        totals = repair_dataset(args.input, args.output, dataset_output=args.dataset_output,
                                anonymize=args.anonymize, payload=args.payload, merged=args.merged,
                                seed=args.seed, stack=args.stack, mtu=args.mtu, gaps=args.gaps,
                                private_v4=args.private_v4, private_v6=args.private_v6,
                                part_rows=args.part_rows or PART_ROWS)
    except INPUT_ERRORS as exc:  # no such dataset, a bad rule value, ...
        return input_error("repair", exc)
    brief = {k: totals[k] for k in ("flows", "packets", "flows_dropped", "skipped_shards", "bits_changed_total",
                                    "bits_changed_share", "bits_changed", "seconds")}
    print(json.dumps(brief, indent=2))
    return 0
