"""Repair one flow of a dataset and show it in tshark (before: decoded as is; after: repaired).

usage: python qa/one_flow.py DATASET FLOW_ID OUTDIR [rule=value ...]"""
import subprocess
import sys
from pathlib import Path

import numpy as np

from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard
from netdiffusion.decode import decode_dataset
from netdiffusion.repair import repair_dataset

src, fid, out, *opts = sys.argv[1:]
kw = {}
for o in opts:
    k, v = o.split("=")
    kw[k] = int(v) if v.isdigit() else v
for k in ("anonymize", "merged"):
    if k in kw:
        kw[k] = bool(kw[k])
out = Path(out)
layout = read_layout(src)
p = read_packets(src)
f = p.take(np.flatnonzero(p.flow_id == fid))
write_fields(out / "in", layout)
write_shard(f, out / "in" / "part-0.parquet")
decode_dataset(out / "in", out / "before")
t = repair_dataset(out / "in", out / "after", progress=False, **kw)
print(open(out / "after" / "repair_report.json").read()[-1500:])
F = ["frame.number", "frame.time_relative", "ip.src", "ipv6.src", "tcp.srcport", "tcp.flags.str", "tcp.seq_raw", "tcp.ack_raw", "tcp.len",
     "tcp.analysis.flags", "_ws.expert.message"]
for d in ("before", "after"):
    for pc in sorted((out / d).rglob("*.pcap")):
        print("==", pc)
        cmd = ["tshark", "-n", "-r", str(pc), "-o", "tcp.analyze_sequence_numbers:TRUE", "-T", "fields"]
        for x in F:
            cmd += ["-e", x]
        print(subprocess.run(cmd, capture_output=True, text=True).stdout)
