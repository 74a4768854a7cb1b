"""TCP analysis errors of repaired corrupted flows: the QA matrix of docs/repair.md ("Limits").

For each noise rate and seed, the dataset's rows are corrupted (``netdiffusion.repair.noise.corrupt``;
rate 0: the rows as they are), repaired with merged class pcaps, and tshark's TCP analysis is run on
every merged pcap; each flagged frame is mapped back to its flow through the repair report. Errors are
what ``validate`` counts as TCP errors (its own tshark command and per-frame counting): lost segment,
out-of-order, ACKed unseen, reused ports on a connection that was not closed.

usage: .venv/bin/python scripts/repair_tcp_qa.py DATASET [--rates 0,0.001,0.01] [--seeds 1,2] [--workdir DIR]

Prints JSON: per (rate, seed) the error count, bits changed and the flows with errors, and the total.
Needs tshark on PATH. The encoded nDPI captures (``netdiffusion encode --input DIR``) make a good
DATASET: session 11 measured 41 such sets (docs/repair.md).
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from netdiffusion.validate import TCP_ERROR_FLAGS, count_line, empty_counts, tshark_command


def tcp_errors(pcaps: Path) -> Counter[str]:
    """Flagged frames per flow id, from the merged pcaps under ``pcaps`` and its repair report."""
    report = json.loads((pcaps / "repair_report.json").read_text())
    flows_by_label: dict[str, list[dict]] = defaultdict(list)
    for flow in report["flows"]:
        flows_by_label[flow["label"]].append(flow)
    errors: Counter[str] = Counter()
    for merged in sorted(pcaps.glob("*/*_merged.pcap")):
        flows = flows_by_label[merged.name[: -len("_merged.pcap")]]
        ends, total = [], 0
        for flow in flows:  # the merged file holds the flows one after another, in report order
            total += flow["packets"]
            ends.append(total)
        out = subprocess.run(tshark_command(str(merged)), capture_output=True, text=True, check=True)
        counts: dict[int, dict] = defaultdict(empty_counts)  # per flow of the file (its own close state)
        for line in out.stdout.splitlines():
            cols = line.split("\t")
            count_line(counts[bisect.bisect_left(ends, int(cols[0]))], cols)
        for i, c in counts.items():
            n = sum(c["tcp_flags"].get(f, 0) for f in TCP_ERROR_FLAGS)
            if n:
                errors[flows[i]["flow_id"]] += n
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--rates", default="0,0.001,0.01", help="comma-separated bit-flip rates (0: no corruption)")
    ap.add_argument("--seeds", default="1", help="comma-separated noise seeds")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the corrupted datasets and pcaps here")
    args = ap.parse_args()

    from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard
    from netdiffusion.repair import repair_dataset
    from netdiffusion.repair.noise import corrupt

    layout, rows = read_layout(args.dataset), read_packets(args.dataset)
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for rate in rates:
            for seed in seeds if rate else seeds[:1]:
                name = f"rate{rate}_seed{seed}" if rate else "clean"
                data = work / name / "dataset"
                write_fields(data, layout)
                write_shard(corrupt(rows, rate, seed) if rate else rows, data / "part-0.parquet")
                totals = repair_dataset(data, work / name / "pcaps", merged=True, progress=False)
                errors = tcp_errors(work / name / "pcaps")
                sets.append({"rate": rate, "seed": seed if rate else None, "flows": totals["flows"],
                             "tcp_errors": sum(errors.values()), "bits_changed_total": totals["bits_changed_total"],
                             "flows_with_errors": dict(errors.most_common())})
                print(f"{name}: {sets[-1]['tcp_errors']} TCP errors, {totals['bits_changed_total']} bits changed",
                      file=sys.stderr)
    json.dump({"dataset": str(args.dataset), "sets": sets, "tcp_errors": sum(s["tcp_errors"] for s in sets)},
              sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
