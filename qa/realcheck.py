"""Repair real (uncorrupted) flows and list the flows whose bits changed (excluding L4 checksums).

usage: python qa/realcheck.py DATASET OUT [rule=value ...]   (e.g. mtu=65535 gaps=keep stack=packet anonymize=1)
"""
import json
import sys
from collections import Counter

from netdiffusion.repair import repair_dataset

src, out, *opts = sys.argv[1:]
kw = {}
for o in opts:
    k, v = o.split("=")
    kw[k] = int(v) if v.isdigit() else v
for k in ("anonymize", "merged"):
    if k in kw:
        kw[k] = bool(kw[k])
t = repair_dataset(src, out, progress=False, **kw)
print(json.dumps({k: t[k] for k in ("flows", "packets", "input_packets", "flows_dropped", "bits_changed")}))
text = open(f"{out}/repair_report.json").read()
data = json.loads(text)
by_rule = Counter()
flows = Counter()
for f in data["flows"]:
    ch = {r: v for r, v in f["bits_changed"].items() if r not in ("l4_checksum",)}
    if not ch:
        continue
    key = tuple(sorted(ch))
    by_rule[key] += 1
    flows[f["label"]] += 1
    if set(ch) - {"ipv4_checksum", "tcp_seq", "tcp_ack", "lengths"}:
        print("OTHER", f["label"], f["flow_id"], ch, f["fields_changed"])
print(by_rule.most_common())
print("dropped", data["dropped"][:5])
