"""Validate pcaps with tshark (checksums, malformed, expert info, TCP analysis), capinfos,
tcpreplay (in a throw-away network namespace; root only) and scapy. Exit 1 if any file fails."""

from __future__ import annotations

import argparse
import json

HELP = "validate pcaps with tshark, capinfos, tcpreplay and scapy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="directory searched recursively for *.pcap (or a file)")
    parser.add_argument("--report", help="write the JSON report here")
    replay = parser.add_mutually_exclusive_group()
    replay.add_argument("--tcpreplay", dest="tcpreplay", action="store_const", const=True, default=None,
                        help="require the tcpreplay check (default: run it when root)")
    replay.add_argument("--no-tcpreplay", dest="tcpreplay", action="store_const", const=False,
                        help="skip the tcpreplay check")
    parser.add_argument("--threshold", action="append", default=[], metavar="CHECK=N",
                        help="allow up to N per file for a check, e.g. tcp_errors=5 (repeatable)")
    parser.add_argument("--workers", type=int, help="concurrent tshark/tcpreplay processes")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.commands import error, input_error
    from netdiffusion.validate import DEFAULT_THRESHOLDS, summary_text, validate_dir

    thresholds = {}
    for item in args.threshold:
        key, _, value = item.partition("=")
        if key not in DEFAULT_THRESHOLDS or not value.isdigit():
            return error("validate", f"--threshold {item!r}: expected CHECK=N with CHECK in {sorted(DEFAULT_THRESHOLDS)}")
        thresholds[key] = int(value)
    try:
        result = validate_dir(args.input, args.report, tcpreplay=args.tcpreplay, thresholds=thresholds,
                              workers=args.workers)
    except FileNotFoundError as exc:  # a missing input or a folder without pcaps: nothing was validated
        return input_error("validate", exc)
    print(summary_text(result))
    if not args.report:
        print(json.dumps(result["totals"], indent=2))
    return 1 if result["failed"] else 0
