"""Encode captures (pcap / pcapng, gzip allowed) into the nPrint Parquet dataset.

Each capture's flows (bidirectional 5-tuple; ICMP by addresses + type/id) become samples of their
first --packets packets, labelled from --manifest, `<label>_NN.pcap` names or the parent folder.
Writes DIR/*.parquet, DIR/fields.json and DIR/summary.json. A file named twice is encoded once.
Exit status: 2 for a bad argument or no capture found, 1 when no packet was kept, else 0."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "captures -> labelled flows -> sharded nPrint Parquet dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                        help="capture files or folders (searched recursively)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="dataset directory")
    parser.add_argument("--manifest", metavar="CSV", help="path,label,macro CSV (paths relative to it)")
    parser.add_argument("--flow-labels", metavar="CSV",
                        help="nDPI per-flow labels: keep only each capture's own application flows")
    parser.add_argument("--packets", type=int, default=1024, help="packets per flow sample")
    parser.add_argument("--windows", action="store_true",
                        help="cut longer flows into consecutive --packets windows instead of truncating")
    parser.add_argument("--shard-size", type=int, default=131072, help="packets per Parquet shard")
    parser.add_argument("--workers", type=int, default=1, help="processes (work is split by file)")
    parser.add_argument("--headers", default="ipv4,ipv6,tcp,udp,icmp",
                        help="comma-separated nPrint headers to include")
    parser.add_argument("--nprint-storage", choices=("list", "binary"), default="list",
                        help="on-disk type of the nprint column: fixed_size_list<int8> (default: readable as bit "
                             "rows by any Parquet reader, and the fastest here) or fixed_size_binary (one int8 "
                             "per byte, for readers that want raw bytes; netdiffusion readers convert)")


def _error(message: str) -> int:
    """One line on stderr, exit status 2: a usage error, not a failed encode."""
    print(f"netdiffusion encode: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first bad argument, as ``--name value: reason``; None when all are usable."""
    from netdiffusion.fields import HEADERS, Layout

    for flag, value in (("--packets", args.packets), ("--shard-size", args.shard_size), ("--workers", args.workers)):
        if value < 1:
            return f"{flag} {value}: must be at least 1"
    headers = [h.strip() for h in args.headers.split(",") if h.strip()]
    if not headers:
        return f"--headers {args.headers!r}: names no header; choose from {','.join(HEADERS)}"
    try:
        Layout(headers)
    except ValueError as exc:
        return f"--headers {args.headers}: {exc}"
    for flag, value in (("--manifest", args.manifest), ("--flow-labels", args.flow_labels)):
        if value is not None and not Path(value).is_file():
            return f"{flag} {value}: no such file"
    return None


def run(args: argparse.Namespace) -> int:
    from netdiffusion.encode import encode_paths

    problem = check_arguments(args)
    if problem:
        return _error(problem)
    try:
        summary = encode_paths(args.input, args.output, manifest=args.manifest, flow_labels=args.flow_labels,
                               packets=args.packets, windows=args.windows, shard_size=args.shard_size,
                               workers=args.workers,
                               headers=[h.strip() for h in args.headers.split(",") if h.strip()],
                               nprint_storage=args.nprint_storage)
    except (FileNotFoundError, ValueError) as exc:  # no captures, a manifest without its columns, ...
        return _error(str(exc))
    brief = {k: summary[k] for k in ("files_read", "packets", "packets_read", "flows", "skipped", "seconds")}
    brief["files_rejected"] = len(summary["files_rejected"])
    brief["files_without_packets"] = summary["files_without_packets"]
    brief["duplicate_inputs"] = summary["duplicate_inputs"]
    print(json.dumps(brief, indent=2))
    if not summary["packets"]:  # nothing a later stage could train on: fail here, not there
        print(f"netdiffusion encode: no packets kept from any capture under {' '.join(args.input)} "
              f"(see the lines above)", file=sys.stderr)
        return 1
    return 0
