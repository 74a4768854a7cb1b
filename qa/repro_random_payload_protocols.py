"""IPv4 rows without a transport header, protocol P, repaired with --payload random: which files
does validate's tshark find malformed? (repair's protocol list was measured with zero payloads.)

usage: python qa/repro_random_payload_protocols.py OUTDIR [zero|random]"""
import sys
from pathlib import Path

import numpy as np

from netdiffusion.dataset import Packets, read_layout, read_packets, write_fields, write_shard
from netdiffusion.repair import repair_dataset
from netdiffusion.repair.engine import ipv4_header_checksums
from netdiffusion.validate import tshark_file

out = Path(sys.argv[1])
payload = sys.argv[2] if len(sys.argv) > 2 else "random"
src = "/tmp/qa/v1/real"
layout = read_layout(src)
p = read_packets(src)
udp = np.flatnonzero(layout.header_present(p.nprint, "udp") & layout.header_present(p.nprint, "ipv4"))[:1]
protos = [2, 4, 41, 9, 29, 89, 97, 112, 113, 143, 224, 47, 50, 103, 132]
rows = []
for proto in protos:
    for length in (28, 60, 120, 600):
        r = p.take(np.repeat(udp, 1))
        m = r.nprint.copy()
        m[:, layout.header_slice("udp")] = -1
        layout.set_field(m, "ipv4_proto", proto, np.array([0]))
        layout.set_field(m, "ipv4_tl", length, np.array([0]))
        layout.set_field(m, "ipv4_cksum", ipv4_header_checksums(layout, m), np.array([0]))
        rows.append(Packets(**{**r.__dict__, "nprint": m, "flow_id": np.array([f"proto{proto:03d}-{length}"], dtype=object),
                               "label": np.array(["p"], dtype=object)}))
data = Packets.concat(rows)
write_fields(out / "in", layout)
write_shard(data, out / "in" / "part-0.parquet")
repair_dataset(out / "in", out / "pcaps", payload=payload, progress=False)
bad = {}
for f in sorted((out / "pcaps").rglob("*.pcap")):
    r = tshark_file(f)
    if r["malformed"] or r["expert_errors"]:
        bad[f.stem] = dict(r["expert_error_messages"])
print(payload, "payload: files with errors:", len(bad), "of", len(rows))
for k, v in bad.items():
    print(" ", k, v)
