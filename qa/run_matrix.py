"""Repair each variant dataset with several option combinations and validate the output.

usage: python qa/run_matrix.py VARIANTS_DIR RESULTS_DIR [--combos 0,1,2] [--variants c01,random] [--no-tcpreplay]
prints one line per (variant, combo): files, failed, and the failing files' checks."""
import argparse
import shutil
from collections import Counter
from pathlib import Path

from netdiffusion.repair import repair_dataset
from netdiffusion.validate import validate_dir

# 2^(6-3) fractional factorial over (anonymize, payload, merged, gaps, stack, mtu): every pair of options covered
COMBOS = [
    dict(anonymize=False, payload="zero", merged=False, gaps="close", stack="flow", mtu=1500),
    dict(anonymize=True, payload="zero", merged=False, gaps="keep", stack="packet", mtu=65535),
    dict(anonymize=False, payload="random", merged=False, gaps="keep", stack="flow", mtu=65535),
    dict(anonymize=True, payload="random", merged=False, gaps="close", stack="packet", mtu=1500),
    dict(anonymize=False, payload="zero", merged=True, gaps="close", stack="packet", mtu=65535),
    dict(anonymize=True, payload="zero", merged=True, gaps="keep", stack="flow", mtu=1500),
    dict(anonymize=False, payload="random", merged=True, gaps="keep", stack="packet", mtu=1500),
    dict(anonymize=True, payload="random", merged=True, gaps="close", stack="flow", mtu=65535),
]

ap = argparse.ArgumentParser()
ap.add_argument("variants")
ap.add_argument("results")
ap.add_argument("--combos", default=",".join(str(i) for i in range(len(COMBOS))))
ap.add_argument("--variants", dest="names", default="")
ap.add_argument("--no-tcpreplay", action="store_true")
ap.add_argument("--keep", action="store_true", help="keep passing outputs")
a = ap.parse_args()
names = a.names.split(",") if a.names else sorted(p.name for p in Path(a.variants).iterdir() if p.is_dir())
for name in names:
    for ci in [int(c) for c in a.combos.split(",")]:
        combo = COMBOS[ci]
        out = Path(a.results) / f"{name}_combo{ci}"
        shutil.rmtree(out, ignore_errors=True)
        t = repair_dataset(Path(a.variants) / name, out, progress=False, seed=ci, **combo)
        pcaps = sorted(out.rglob("*.pcap"))
        flow_files = [p for p in pcaps if not p.name.endswith("_merged.pcap")]
        v = validate_dir(out, out.parent / f"{name}_combo{ci}.validate.json", tcpreplay=not a.no_tcpreplay
                         and None, progress=False, workers=2)
        tt = v["totals"]
        bad = [f for f in v["files"] if not f["ok"]]
        kinds = Counter(c for f in bad for c in f["failed_checks"])
        merged_bad = [f["file"] for f in bad if f["file"].endswith("_merged.pcap")]
        print(f"{name} combo{ci} flows={t['flows']} dropped={t['flows_dropped']} files={len(flow_files)} "
              f"pkts={t['packets']}/{tt.get('packets')} failed={tt['files_failed']} {dict(kinds)} merged_failed={len(merged_bad)} "
              f"msgs={tt['expert_error_messages']} flags={ {k: v for k, v in tt['tcp_flags'].items() if k in ('lost_segment','ack_lost_segment','out_of_order','reused_ports')} }",
              flush=True)
        if t["flows"] != len(flow_files):
            print("  MISMATCH report flows", t["flows"], "files", len(flow_files))
        for f in bad[:6]:
            print("   ", f["file"], f["failed_checks"], {k: f[k] for k in ("malformed", "bad_checksums", "expert_errors", "tcp_errors")},
                  f.get("tcp_flags"), f.get("tcpreplay"), f.get("tshark_error", ""))
        if not bad and not a.keep:
            shutil.rmtree(out)
