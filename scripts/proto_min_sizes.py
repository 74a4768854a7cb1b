"""Zero-payload sizes (0..128 bytes and 14 longer ones up to 1,480) at which validate's tshark finds an
IPv4/IPv6 packet of protocol P malformed or an expert error (what repair's protocol tables in
netdiffusion/repair/engine.py come from; all numbers: ``$(seq 0 255)``):
.venv/bin/python scripts/proto_min_sizes.py OUTDIR P [P ...]"""
import subprocess
import sys
from pathlib import Path

import numpy as np

from netdiffusion.pcap.writer import ethernet_frames, pcap_bytes
from netdiffusion.validate import TSHARK_PREFS, payload_protocols

sys.path.insert(0, str(Path(__file__).parent))
from proto_random_scan import ipv4, ipv6  # noqa: E402

SIZES = [*range(129), 160, 200, 256, 300, 400, 512, 576, 1000, 1024, 1400, 1452, 1480]
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for proto in map(int, sys.argv[2:]):
    for fam, build in (("v4", ipv4), ("v6", ipv6)):
        pk = [build(proto, bytes(n)) for n in SIZES]
        p = out / f"{fam}_{proto}.pcap"
        p.write_bytes(pcap_bytes(ethernet_frames(pk, [0] * len(pk)), np.arange(len(pk)) * 1000, 1))
        cmd = ["tshark", "-n", "-r", str(p)]
        for pref in TSHARK_PREFS:
            cmd += ["-o", pref]
        for x in payload_protocols():
            cmd += ["--disable-protocol", x]
        cmd += ["-T", "fields", "-e", "frame.number", "-e", "_ws.malformed", "-e", "_ws.expert.severity"]
        lines = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
        bad = [SIZES[int(x.split("\t")[0]) - 1] for x in lines if x.split("\t")[1] or "8388608" in x]
        print(fam, proto, "bad zero-payload sizes:", bad, flush=True)
