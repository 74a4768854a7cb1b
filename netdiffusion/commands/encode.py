"""Encode captures (pcap / pcapng, gzip allowed) into the nPrint Parquet dataset.

Each capture's flows (bidirectional 5-tuple; ICMP by addresses + type/id) become samples of their
first --packets packets, labelled from --manifest, `<label>_NN.pcap` names or the parent folder.
Writes DIR/*.parquet, DIR/fields.json and DIR/summary.json."""

from __future__ import annotations

import argparse
import json

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


def run(args: argparse.Namespace) -> int:
    from netdiffusion.encode import encode_paths

    summary = encode_paths(args.input, args.output, manifest=args.manifest, flow_labels=args.flow_labels,
                           packets=args.packets, windows=args.windows, shard_size=args.shard_size,
                           workers=args.workers, headers=[h.strip() for h in args.headers.split(",") if h.strip()],
                           nprint_storage=args.nprint_storage)
    brief = {k: summary[k] for k in ("files_read", "packets", "packets_read", "flows", "skipped", "seconds")}
    brief["files_rejected"] = len(summary["files_rejected"])
    print(json.dumps(brief, indent=2))
    return 0 if summary["files_read"] or not summary["files_rejected"] else 1
