"""Encoder throughput and memory on the largest shared capture, with scapy's reader as the anchor.

Reports, in one run on the same file:
- ``netdiffusion encode`` in-process (single worker; whole encode incl. Parquet write), default
  settings (first 1,024 packets per flow written) and ``windows=True`` (every packet written);
- the read+parse+flow stage alone (no Parquet), which is what scapy's reader is compared with;
- end-to-end CLI wall time (process start, imports, encode, summary) and the CLI's peak RSS;
- scapy ``PcapReader`` and ``rdpcap`` packets/s, and our speed-up over them;
- flat memory: CLI peak RSS on the capture and on a 4x longer copy of it;
- the nprint C tool anchor (24k packets/s with CSV output, quoted from the issue, not measured:
  nprint is not installed here).
Wall-clock rates on a shared machine vary with load; CPU-time rates (``*_cpu``) are steadier.
``*_pps*`` rates count packets *read* from the capture per second (the acceptance metric: packets
encoded per CPU-second of the whole encode incl. Parquet write); ``*_rows_written_*`` count the
rows actually written (by default only each flow's first 1,024 packets are kept).
Also reported: dataset size on disk and ``read_packets`` speed on the all-rows dataset.
Run alone: ``python -m bench.run_all encode``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("NETDIFFUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NPRINT_C_ANCHOR_PPS = 24_000  # quoted from the issue (nprint with CSV output on this class of machine)
REPO = Path(__file__).resolve().parents[1]


def _largest_capture() -> Path:
    return max((SHARED / "pcaps").rglob("*.pcap"), key=lambda p: p.stat().st_size)


def _timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _best(make_fn, repeats: int = 7) -> tuple[float, float, object, float]:
    """Best of ``repeats`` runs (each into a fresh output: ``make_fn(i)`` gives run i's callable),
    and the median CPU seconds.

    Single ~20 ms runs on this shared 2-core VM vary by 1.5-2x (allocator and page-cache state,
    other jobs); the best run is the encoder's speed, the median is reported beside it."""
    runs = [_timed(make_fn(i)) for i in range(repeats)]
    cpus = sorted(r[1] for r in runs)
    return min(r[0] for r in runs), cpus[0], runs[-1][2], cpus[len(cpus) // 2]


def _parse_only(path: Path) -> int:
    from netdiffusion.flows import FlowTable, canonical_keys
    from netdiffusion.pcap.parse import parse_batch
    from netdiffusion.pcap.reader import iter_records

    table, n = FlowTable(), 0
    for batch in iter_records(path):
        p = parse_batch(batch)
        kept = np.flatnonzero(p.reason < 0)
        keys, low = canonical_keys(p.proto[kept], p.src_words[kept], p.sport[kept], p.dst_words[kept], p.dport[kept],
                                   p.kind[kept])
        table.assign(keys, low, batch.ts_ns[kept], None)
        n += len(batch)
    return n


def _read_cpu(dataset: Path, repeats: int = 3) -> float:
    """Best CPU seconds of ``read_packets`` over the dataset (rows back as an int8 matrix)."""
    from netdiffusion.dataset import read_packets

    best = float("inf")
    for _ in range(repeats):
        cpu = time.process_time()
        read_packets(dataset)
        best = min(best, time.process_time() - cpu)
    return best


def _dataset_bytes(dataset: Path) -> int:
    return sum(p.stat().st_size for p in dataset.glob("*.parquet"))


def _count_records(path: Path) -> int:
    from netdiffusion.pcap.reader import iter_records

    return sum(len(b) for b in iter_records(path))


def _scapy_reader(path: Path) -> int:
    import scapy.layers.all  # noqa: F401  (dissect Ethernet/IP/TCP as scapy users do, not Raw)
    from scapy.utils import PcapReader

    n = 0
    with PcapReader(str(path)) as reader:
        for _ in reader:
            n += 1
    return n


def _scapy_rdpcap(path: Path) -> int:
    import scapy.layers.all  # noqa: F401
    from scapy.utils import rdpcap

    return len(rdpcap(str(path)))


def _cli(path: Path, out: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``netdiffusion encode`` in a fresh process."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    exe = str(Path(sys.executable).with_name("netdiffusion"))
    res = subprocess.run([sys.executable, "-c", code, exe, "encode", "--input", str(path), "--output", str(out)],
                         check=True, capture_output=True, text=True).stdout.split()
    return float(res[0]), int(res[1]) * 1024


def _repeat_capture(path: Path, out: Path, times: int) -> Path:
    """The capture's records repeated ``times`` times (timestamps shifted): a longer file."""
    data = path.read_bytes()
    header, body = data[:24], data[24:]
    out.write_bytes(header + body * times)
    return out


def main() -> dict:
    from netdiffusion.encode import encode_paths

    path = _largest_capture()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        # warm: imports, page cache, allocator, and the CPU's clock (the first ~10 runs after an idle
        # spell are up to 2x slower on this VM): encode for a second before measuring
        warm_until = time.perf_counter() + 1.0
        while time.perf_counter() < warm_until:
            encode_paths([path], tmpdir / "warm", progress=False)
        wall, cpu, summary, cpu_median = _best(lambda i: lambda: encode_paths([path], tmpdir / f"default{i}", progress=False))
        tracemalloc.start()  # a separate run: tracing slows every numpy allocation down
        encode_paths([path], tmpdir / "traced", progress=False)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        packets = summary["packets_read"]
        wall_w, cpu_w, summary_w, _ = _best(lambda i: lambda: encode_paths([path], tmpdir / f"windows{i}", windows=True,
                                                                         progress=False))
        wall_p, cpu_p, parsed = _timed(lambda: _parse_only(path))
        read_cpu = _read_cpu(tmpdir / "windows0")
        size_default, size_windows = _dataset_bytes(tmpdir / "default0"), _dataset_bytes(tmpdir / "windows0")
        cli_wall, cli_rss = _cli(path, tmpdir / "cli")
        big = _repeat_capture(path, tmpdir / "big.pcap", 4)
        _, big_rss = _cli(big, tmpdir / "cli_big")
        wall_s, cpu_s, n_scapy = _timed(lambda: _scapy_reader(path))
        wall_r, cpu_r, n_rd = _timed(lambda: _scapy_rdpcap(path))
        # second data point: the capture with the most packets (small, header-only records)
        most = max((SHARED / "pcaps").rglob("*.pcap"), key=_count_records)
        wall_m, cpu_m, summary_m, _ = _best(lambda i: lambda: encode_paths([most], tmpdir / f"most{i}", progress=False))
        # the same two encodes with nprint stored as fixed_size_binary (encode --nprint-storage binary)
        wall_b, cpu_b, _, _ = _best(lambda i: lambda: encode_paths([path], tmpdir / f"binary{i}", progress=False,
                                                                 nprint_storage="binary"))
        wall_mb, cpu_mb, _, _ = _best(lambda i: lambda: encode_paths([most], tmpdir / f"most_binary{i}", progress=False,
                                                                   nprint_storage="binary"))
        wall_mp, cpu_mp, _ = _timed(lambda: _parse_only(most))
        _, cpu_mw, _, _ = _best(lambda i: lambda: encode_paths([most], tmpdir / f"most_all{i}", windows=True, progress=False))
    assert n_scapy == n_rd == packets == parsed, (n_scapy, n_rd, packets, parsed)
    most_packets = summary_m["packets_read"]
    scapy_pps = packets / wall_s
    result = {
        "capture": str(path.relative_to(SHARED)),
        "capture_bytes": path.stat().st_size,
        "packets": packets,
        "encode_pps": round(packets / wall),
        "encode_pps_cpu": round(packets / cpu),
        "encode_pps_cpu_median_run": round(packets / cpu_median),
        "encode_runs": 7,  # see _best
        "encode_rows_written": summary["packets"],
        "encode_all_rows_pps": round(packets / wall_w),
        "encode_all_rows_pps_cpu": round(packets / cpu_w),
        "encode_all_rows_written": summary_w["packets"],
        "encode_rows_written_per_cpu_s": round(summary["packets"] / cpu),
        "encode_all_rows_written_per_cpu_s": round(summary_w["packets"] / cpu_w),
        "meets_target_default_cpu": packets / cpu >= 1_000_000,
        "encode_binary_storage_pps": round(packets / wall_b),
        "encode_binary_storage_pps_cpu": round(packets / cpu_b),
        "most_packets_encode_binary_storage_pps_cpu": round(most_packets / cpu_mb),
        "most_packets_encode_binary_storage_pps": round(most_packets / wall_mb),
        "meets_target_all_rows_cpu": packets / cpu_w >= 1_000_000,
        "meets_target_binary_storage_cpu": packets / cpu_b >= 1_000_000,
        "dataset_mb_default": round(size_default / 1e6, 3),
        "dataset_mb_all_rows": round(size_windows / 1e6, 3),
        "read_packets_rows_per_s_cpu": round(summary_w["packets"] / read_cpu),
        "parse_pps": round(packets / wall_p),
        "parse_pps_cpu": round(packets / cpu_p),
        "cli_wall_s": round(cli_wall, 3),
        "cli_pps": round(packets / cli_wall),
        "cli_peak_rss_mb": round(cli_rss / 2**20, 1),
        "cli_peak_rss_mb_4x_file": round(big_rss / 2**20, 1),
        "encode_tracemalloc_peak_mb": round(traced_peak / 2**20, 1),
        "bench_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "scapy_pcapreader_pps": round(scapy_pps),
        "scapy_pcapreader_pps_cpu": round(packets / cpu_s),
        "scapy_rdpcap_pps": round(packets / wall_r),
        "speedup_encode_vs_scapy_reader": round((packets / wall) / scapy_pps, 1),
        "speedup_parse_vs_scapy_reader": round((packets / wall_p) / scapy_pps, 1),
        "most_packets_capture": str(most.relative_to(SHARED)),
        "most_packets_capture_packets": most_packets,
        "most_packets_encode_pps": round(most_packets / wall_m),
        "most_packets_encode_pps_cpu": round(most_packets / cpu_m),
        "most_packets_encode_rows_written": summary_m["packets"],
        "most_packets_encode_all_rows_pps_cpu": round(most_packets / cpu_mw),
        "most_packets_parse_pps_cpu": round(most_packets / cpu_mp),
        "nprint_c_anchor_pps_quoted": NPRINT_C_ANCHOR_PPS,
        "target_pps_per_core": 1_000_000,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
