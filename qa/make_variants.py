"""Build QA datasets from an encoded dataset: a subset of flows (real), corrupted copies and random rows.

usage: python qa/make_variants.py ENCODED OUTDIR --captures a,b,c --flows-per-capture 4 [--random-flows 30 --random-packets 20]
writes OUTDIR/real, OUTDIR/c01, OUTDIR/c10, OUTDIR/c50, OUTDIR/random (each a dataset; label = capture stem)
"""
import argparse
from pathlib import Path

import numpy as np

from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard
from netdiffusion.repair.noise import corrupt, random_packets

ap = argparse.ArgumentParser()
ap.add_argument("encoded")
ap.add_argument("out")
ap.add_argument("--captures", default="")
ap.add_argument("--flows-per-capture", type=int, default=4)
ap.add_argument("--random-flows", type=int, default=30)
ap.add_argument("--random-packets", type=int, default=20)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
layout = read_layout(a.encoded)
p = read_packets(a.encoded)
stem = np.array([f.rsplit("-", 2)[0] for f in p.flow_id.astype(str)], dtype=object)
caps = a.captures.split(",") if a.captures else sorted(set(stem))
keep = np.zeros(len(p), bool)
for c in caps:
    fids = sorted(set(p.flow_id[stem == c].astype(str)))
    if not fids:
        print("no flows for", c)
    rng = np.random.default_rng(a.seed)
    pick = set(rng.choice(fids, size=min(a.flows_per_capture, len(fids)), replace=False)) if fids else set()
    keep |= np.isin(p.flow_id.astype(str), list(pick))
sub = p.take(np.flatnonzero(keep))
sub.label = np.array([s for s in stem[keep]], dtype=object)
out = Path(a.out)
variants = {"real": sub, "c01": corrupt(sub, 0.01, a.seed), "c10": corrupt(sub, 0.10, a.seed + 1),
            "c50": corrupt(sub, 0.50, a.seed + 2)}
if a.random_flows:
    variants["random"] = random_packets(layout, a.random_flows, a.random_packets, seed=a.seed)
for name, pk in variants.items():
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    write_fields(d, layout)
    write_shard(pk, d / "part-0.parquet")
    print(name, len(pk), "rows", len(set(pk.flow_id)), "flows")
