"""Which IP protocol numbers does validate's tshark call malformed (or an expert error) when the
payload is random bytes (repair --payload random), as opposed to zeros (what repair's protocol list
was measured with)?

usage: .venv/bin/python scripts/proto_random_scan.py OUTDIR [v4|v6]"""
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from netdiffusion.pcap.writer import ethernet_frames, pcap_bytes
from netdiffusion.validate import tshark_file


def ipv4(proto: int, payload: bytes) -> bytes:
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                              bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    h[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(h) + payload


def ipv6(nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, b"\xfd" + b"\0" * 14 + b"\1",
                       b"\xfd" + b"\0" * 14 + b"\2") + payload


def main() -> None:
    out = Path(sys.argv[1])
    fam = sys.argv[2] if len(sys.argv) > 2 else "v4"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for proto in range(256):
        if proto in (6, 17, 1, 58):
            continue
        pkts = [(ipv4 if fam == "v4" else ipv6)(proto, rng.integers(0, 256, n, dtype=np.uint8).tobytes())
                for n in (8, 20, 40, 64, 100, 300, 1000, 1400) for _ in range(3)]
        p = out / f"{fam}_{proto:03d}.pcap"
        p.write_bytes(pcap_bytes(ethernet_frames(pkts, [0] * len(pkts)), np.arange(len(pkts)) * 1000, 1))
        paths.append((proto, p))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda x: (x[0], tshark_file(x[1])), paths))
    bad = [(proto, r["malformed"], r["expert_errors"], dict(r["expert_error_messages"])) for proto, r in results
           if r["malformed"] or r["expert_errors"]]
    for b in bad:
        print(*b)
    print(fam, "protocols malformed/expert errors with random payload:", [b[0] for b in bad])


if __name__ == "__main__":
    main()
