"""Two flows whose ids differ only in characters that are not file-safe ('f 1', 'f_1') become one file.

usage: python qa/repro_name_collision.py OUTDIR"""
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
p.flow_id = np.where(p.flow_id == fids[0], "f 1", "f_1").astype(object)
p.label = np.full(len(p), "tftp", dtype=object)
write_fields(out / "in", layout)
write_shard(p, out / "in" / "part-0.parquet")
t = repair_dataset(out / "in", out / "pcaps", dataset_output=out / "ds", progress=False)
files = sorted(str(f.relative_to(out / "pcaps")) for f in (out / "pcaps").rglob("*.pcap"))
print("report flows", t["flows"], "packets", t["packets"], "files", files)
