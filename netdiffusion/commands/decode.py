"""Decode an nPrint dataset into one Ethernet pcap per flow (DIR/<label>/<flow_id>.pcap).

Headers come from the bits alone; payloads are zero-filled to the recorded IP length."""

from __future__ import annotations

import argparse
import json

from netdiffusion.commands import INPUT_ERRORS, input_error

HELP = "nPrint dataset -> one pcap per flow (headers exact, payload zero-filled)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", required=True, metavar="DATASET", help="dataset directory")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder for pcaps")


def run(args: argparse.Namespace) -> int:
    from netdiffusion.decode import decode_dataset

    try:
        summary = decode_dataset(args.input, args.output)
    except INPUT_ERRORS as exc:  # no such dataset, no shards, ...
        return input_error("decode", exc)
    keys = ("flows", "packets", "rows_without_ip", "flows_without_packets", "skipped_shards", "seconds")
    print(json.dumps({k: summary.get(k, 0) for k in keys}, indent=2))
    return 0
