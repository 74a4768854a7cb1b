"""For each IPv4 protocol number, the zero-payload sizes (0..40 bytes) validate's tshark finds malformed.

usage: python qa/proto_zero_sizes.py OUTDIR"""
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from netdiffusion.pcap.writer import ethernet_frames, pcap_bytes
from netdiffusion.validate import tshark_file

sys.path.insert(0, str(Path(__file__).parent))
from proto_random_scan import ipv4  # noqa: E402  (builds a valid IPv4 header)

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
sizes = list(range(0, 41))
jobs = []
for proto in range(256):
    if proto in (1, 6, 17):
        continue
    p = out / f"z_{proto:03d}.pcap"
    pk = [ipv4(proto, bytes(n)) for n in sizes]
    p.write_bytes(pcap_bytes(ethernet_frames(pk, [0] * len(pk)), np.arange(len(pk)) * 1000, 1))
    jobs.append((proto, p))


def run(job):
    proto, p = job
    r = tshark_file(p)
    return proto, r


with ThreadPoolExecutor(2) as pool:
    for proto, r in pool.map(run, jobs):
        if r["malformed"] or r["expert_errors"]:
            print(proto, r["malformed"], r["expert_errors"], dict(r["expert_error_messages"]), flush=True)
