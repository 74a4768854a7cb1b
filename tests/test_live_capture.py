"""Repair on real traffic no test file holds: Linux sockets talking across two network namespaces.

``scripts/netns_traffic.py`` captures it fresh on every run (root, ``ip``, ``tcpdump``, ``ethtool``:
``make system-deps`` installs the tools; the validator's tcpreplay tests need root as well). Real
traffic is already valid, so repair may change nothing but the L4 checksums (nPrint does not
encode payloads, and repair writes zeros); corrupted, it must still validate cleanly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import Packets, read_layout, read_packets, write_fields, write_shard
from netdiffusion.encode import encode_paths
from netdiffusion.repair import RepairConfig, repair_dataset, repair_packets
from netdiffusion.repair.noise import corrupt
from netdiffusion.validate import validate_dir

SCENARIOS = "http,http_v6,ipopts,ecn,refused,udp,ping,chat,fastopen,halfclose,v6,urgent"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """The scenarios captured and encoded (one sample per flow): the dataset's folder."""
    out = tmp_path_factory.mktemp("live")
    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "netns_traffic.py"), str(out / "pcaps"),
                           "--scenarios", SCENARIOS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    captured = {r["scenario"]: r for r in json.loads(proc.stdout)}
    assert set(captured) == set(SCENARIOS.split(","))
    assert all(r["packets"] > 0 and r["dropped_by_kernel"] == 0 for r in captured.values()), captured
    encode_paths([out / "pcaps"], out / "ds", manifest=out / "pcaps" / "manifest.csv", progress=False)
    return out / "ds"


@pytest.mark.slow
def test_real_linux_traffic_is_left_unchanged(live: Path, tmp_path: Path) -> None:
    """Every flow the capture holds valid is left as it is. Valid means tshark's TCP analysis finds
    no error in it: now and then the kernel resends a burst right after the first (a fastopen flow
    of session 21: six segments again 0.3 ms later, out-of-order in tshark), and repair renumbers
    such a flow by design (docs/repair.md); at most one flow of a run may be such."""
    from netdiffusion.decode import decode_dataset

    layout, packets = read_layout(live), read_packets(live)
    assert set(np.unique(packets.label)) == set(SCENARIOS.split(","))
    m = packets.nprint
    # the features this capture exists for are in it: IPv4 options, ECN flags, IPv6, ICMP
    ipopts = packets.label == "ipopts"
    assert (layout.field_values(m[ipopts], "ipv4_hl") > 5).sum() > 10
    ecn = packets.label == "ecn"
    assert (layout.field_values(m[ecn], "tcp_ece") == 1).any() and (layout.field_values(m[ecn], "tcp_cwr") == 1).any()
    assert (layout.field_values(m[packets.label == "http_v6"], "ipv6_ver") == 6).sum() > 20
    assert (layout.field_values(m[packets.label == "ping"], "icmp_type") == 0).any()  # echo replies
    assert (layout.field_values(m[packets.label == "udp"], "icmp_type") == 3).any()  # port unreachable
    fast_open = packets.label == "fastopen"  # requests on SYNs (IP length past the headers)
    syn_data = (layout.field_values(m[fast_open], "tcp_syn") == 1) & (layout.field_values(m[fast_open], "tcp_ackf") == 0) & (
        layout.field_values(m[fast_open], "ipv4_tl") > 4 * (layout.field_values(m[fast_open], "ipv4_hl")
                                                            + layout.field_values(m[fast_open], "tcp_doff")))
    assert syn_data.sum() >= 2
    # urgent data: segments before the urgent byte point past their own data (RFC 6093)
    urgent = (packets.label == "urgent") & layout.header_present(m, "tcp")
    l3 = 4 * layout.field_values(m[urgent], "ipv4_hl") + 4 * layout.field_values(m[urgent], "tcp_doff")
    beyond = (layout.field_values(m[urgent], "tcp_urg") == 1) & (
        layout.field_values(m[urgent], "tcp_urp") > layout.field_values(m[urgent], "ipv4_tl") - l3)
    assert beyond.sum() >= 2

    decode_dataset(live, tmp_path / "decoded")
    report = validate_dir(tmp_path / "decoded", tcpreplay=False, progress=False)
    lossy = {Path(f["file"]).stem for f in report["files"] if f["tcp_errors"]}
    assert len(lossy) <= 1, sorted(lossy)
    out = repair_packets(layout, packets, RepairConfig())
    valid = ~np.isin(out["packets"].flow_id.astype(str), sorted(lossy))
    changed = {rule: int(v[valid].sum()) for rule, v in out["result"].bits.items()
               if v[valid].any() and rule != "l4_checksum"}
    assert changed == {}, changed


@pytest.mark.slow
def test_corrupted_real_linux_traffic_validates(live: Path, tmp_path: Path) -> None:
    layout, packets = read_layout(live), read_packets(live)
    noisy: Packets = corrupt(packets, 0.05, seed=14)
    write_fields(tmp_path / "noisy", layout)
    write_shard(noisy, tmp_path / "noisy" / "part.parquet")
    totals = repair_dataset(tmp_path / "noisy", tmp_path / "pcaps", progress=False)
    assert totals["flows"] == len(np.unique(packets.flow_id)) and totals["bits_changed_total"] > 0
    result = validate_dir(tmp_path / "pcaps", tcpreplay=False, progress=False)["totals"]
    assert result["files"] == totals["flows"] and result["files_failed"] == 0, result
    assert result["malformed"] == result["bad_checksums"] == result["expert_errors"] == result["tcp_errors"] == 0


def _unacknowledged(pcap: Path) -> int:
    """Bytes (SYN and FIN count one) each side of each TCP connection in ``pcap`` sent that the
    other side's last acknowledgement does not cover, summed (tshark reads the numbers)."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-o", "tcp.analyze_sequence_numbers:FALSE", "-T", "fields",
                          "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.flags.syn", "-e", "tcp.flags.fin",
                          "-e", "tcp.flags.ack", "-e", "tcp.seq_raw", "-e", "tcp.ack_raw", "-e", "tcp.len"],
                         capture_output=True, text=True, check=True).stdout
    top: dict[tuple[str, str], int] = {}
    acked: dict[tuple[str, str], int] = {}
    for line in out.splitlines():
        stream, port, syn, fin, ack, seq, ackn, size = line.split("\t")
        if not seq:
            continue  # not TCP
        flag = {"1": 1, "True": 1}
        end = (int(seq) + int(size or 0) + flag.get(syn, 0) + flag.get(fin, 0)) % 2**32
        key = (stream, port)
        if key not in top or 0 < (end - top[key]) % 2**32 < 2**31:
            top[key] = end
        if flag.get(ack):
            acked[(stream, port)] = int(ackn)
    total = 0
    for (stream, port), end in top.items():
        peer = [v for (s, p), v in acked.items() if s == stream and p != port]
        if peer and (end - peer[0]) % 2**32 < 2**31:
            total += (end - peer[0]) % 2**32
    return total


@pytest.mark.slow
def test_real_lossy_downloads_keep_every_byte_acknowledged(repo_root: Path, tmp_path: Path) -> None:
    """Downloads through a token bucket that drops bursts, captured at the receiver: lost
    segments come again after the ones beyond them. Repair numbers them in the order they came
    (tshark calls the capture's order lost / out-of-order), and what the receiver acknowledged in
    the capture, every byte and the FIN, it still acknowledges. Before, closing each hole moved
    the later acknowledgements down by its size although the late segments filled it: 27-52 kB
    and the FIN of three of the downloads were never acknowledged."""
    from netdiffusion.decode import decode_dataset

    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "netns_traffic.py"), str(tmp_path / "pcaps"),
                           "--scenarios", "lossy"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    encode_paths([tmp_path / "pcaps"], tmp_path / "ds", manifest=tmp_path / "pcaps" / "manifest.csv", progress=False)
    decode_dataset(tmp_path / "ds", tmp_path / "captured")
    repair_dataset(tmp_path / "ds", tmp_path / "repaired", progress=False)
    captured = {p.name: p for p in (tmp_path / "captured").rglob("*.pcap")}
    repaired = {p.name: p for p in (tmp_path / "repaired").rglob("*.pcap")}
    assert len(captured) >= 5 and set(captured) == set(repaired)
    report = json.loads((tmp_path / "repaired" / "repair_report.json").read_text())
    assert report["totals"]["bits_changed"].get("tcp_seq", 0) > 0  # loss happened: flows were renumbered
    left = {name: _unacknowledged(repaired[name]) for name in captured if _unacknowledged(captured[name]) == 0}
    assert len(left) >= 5 and not any(left.values()), left
    result = validate_dir(tmp_path / "repaired", tcpreplay=False, progress=False)["totals"]
    assert result["files_failed"] == 0, result


@pytest.mark.slow
def test_real_port_scans_are_left_as_captured(repo_root: Path, tmp_path: Path) -> None:
    """nmap's probes sent from a raw socket to an open and a closed port, and what the Linux
    kernels answer (RST-ACKs, a SYN-ACK that the prober's kernel resets, silence): every probe but
    OS detection's T3 (SYN + FIN + PSH + URG, see docs/repair.md) is left as it is, flags
    included (before session 24, FIN, NULL and Xmas probes got ACK and the Xmas probe lost URG),
    and the repaired pcaps validate and replay."""
    proc = subprocess.run([sys.executable, str(repo_root / "scripts" / "netns_traffic.py"), str(tmp_path / "pcaps"),
                           "--scenarios", "scan"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    encode_paths([tmp_path / "pcaps"], tmp_path / "ds", manifest=tmp_path / "pcaps" / "manifest.csv", progress=False)
    layout, packets = read_layout(tmp_path / "ds"), read_packets(tmp_path / "ds")
    tcp = layout.header_present(packets.nprint, "tcp")
    first = tcp & (packets.packet_index == 0) & (packets.direction == 0)
    flags = {k: layout.field_values(packets.nprint[first], k) for k in ("tcp_syn", "tcp_fin", "tcp_urg", "tcp_ackf")}
    t3 = set(packets.flow_id[first][(flags["tcp_syn"] == 1) & (flags["tcp_fin"] == 1)])
    # every kind of probe, at both ports (T3's to the open port goes unanswered)
    assert len(set(packets.flow_id[first])) == 14 and len(t3) == 2
    assert ((flags["tcp_fin"] == 1) & (flags["tcp_urg"] == 1) & (flags["tcp_syn"] == 0)).sum() == 2  # Xmas
    assert ((flags["tcp_ackf"] == 0) & (flags["tcp_syn"] == 0)).sum() == 6  # FIN, NULL, Xmas
    out = repair_packets(layout, packets, RepairConfig())
    others = ~np.isin(out["packets"].flow_id, sorted(t3))
    changed = {rule: int(v[others].sum()) for rule, v in out["result"].bits.items()
               if v[others].any() and rule != "l4_checksum"}
    assert changed == {}, changed
    repair_dataset(tmp_path / "ds", tmp_path / "repaired", progress=False)
    result = validate_dir(tmp_path / "repaired", progress=False)["totals"]
    assert result["files_failed"] == 0, result
