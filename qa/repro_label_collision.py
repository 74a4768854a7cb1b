"""Two labels that differ only in characters that are not file-safe ('web video', 'web_video'):
their flows (same generated-style ids) share one folder, and --dataset-output keeps one class's shard.

usage: python qa/repro_label_collision.py OUTDIR"""
import sys
from pathlib import Path

import numpy as np

from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard
from netdiffusion.repair import repair_dataset

out = Path(sys.argv[1])
src = "/tmp/qa/v1/real"
layout = read_layout(src)
p = read_packets(src)
fids = sorted(set(p.flow_id[p.label == "tftp"]))[:2]
p = p.take(np.flatnonzero(np.isin(p.flow_id, fids)))
first = p.flow_id == fids[0]
p.label = np.where(first, "web video", "web_video").astype(object)
p.flow_id = np.full(len(p), "web_video-s0-000000", dtype=object)  # what generate names flow 0 of either class
write_fields(out / "in", layout)
write_shard(p, out / "in" / "part-0.parquet")
t = repair_dataset(out / "in", out / "pcaps", dataset_output=out / "ds", merged=True, progress=False)
files = sorted(str(f.relative_to(out / "pcaps")) for f in (out / "pcaps").rglob("*.pcap"))
back = read_packets(out / "ds")
print("report flows", t["flows"], "packets", t["packets"], "files", files)
print("repaired dataset: labels", sorted(set(back.label)), "rows", len(back), "of", t["packets"])
