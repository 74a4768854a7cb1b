"""Encoder: dataset contract, flows, labels, nDPI filtering, windows, idempotence, workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from netdiffusion.dataset import META_COLUMNS, read_layout, read_packets, read_table, shard_paths
from netdiffusion.encode import encode_paths
from netdiffusion.fields import DEFAULT_LAYOUT, Layout
from netdiffusion.pcap.writer import write_pcap


def test_binary_nprint_storage_reads_back_identical(small_dataset: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "binary"
    capture = shared_data / "pcaps/zoom/zoom.pcap"
    encode_paths([capture], out, manifest=shared_data / "manifest.csv", packets=64, progress=False,
                 nprint_storage="binary")
    listed = tmp_path / "list"
    encode_paths([capture], listed, manifest=shared_data / "manifest.csv", packets=64, progress=False)
    raw = pq.read_table(shard_paths(out)[0])
    assert raw.schema.field("nprint").type == pa.binary(1408)  # on disk: one int8 per byte
    table = read_table(shard_paths(out)[0])
    assert str(table.schema.field("nprint").type).startswith("fixed_size_list<element: int8 not null>[1408]")
    raw_rows = np.frombuffer(raw.column("nprint").chunk(0).buffers()[1], dtype=np.int8)
    assert raw_rows[: 2 * 1408].tolist() == table.column("nprint").chunk(0).flatten()[: 2 * 1408].to_pylist()
    a, b = read_packets(out), read_packets(listed)
    assert np.array_equal(a.nprint, b.nprint) and a.flow_id.tolist() == b.flow_id.tolist()
    with pytest.raises(ValueError, match="nprint_storage"):
        encode_paths([capture], tmp_path / "bad", nprint_storage="csv", progress=False)


def test_small_dataset_follows_the_contract(small_dataset: Path) -> None:
    assert json.loads((small_dataset / "fields.json").read_text()) == DEFAULT_LAYOUT.columns
    summary = json.loads((small_dataset / "summary.json").read_text())
    for key in ("files_read", "files_rejected", "packets", "flows", "skipped"):
        assert key in summary
    assert summary["files_read"] == 5 and summary["files_rejected"] == []
    packets = read_packets(small_dataset)
    assert len(packets) == summary["packets"]
    assert set(summary["flows"]) == set(packets.label) and len(set(packets.label)) >= 3
    assert summary["skipped"]["beyond_packets"] > 0
    raw = pq.read_table(shard_paths(small_dataset)[0])  # a plain Parquet reader sees the contract's type
    assert raw.column_names == [*META_COLUMNS, "nprint"]
    assert str(raw.schema.field("nprint").type).startswith("fixed_size_list<element: int8 not null>[1408]")
    assert set(np.unique(packets.nprint)) <= {-1, 0, 1}
    labels = dict(zip(packets.label, packets.macro, strict=True))
    assert labels["zoom"] == "conferencing" and labels["reddit"] == "social"
    assert all(Path(s).is_file() for s in set(packets.source))  # the paths as given
    layout = read_layout(small_dataset)
    flows = 0
    for flow_id, flow in packets.flows():
        flows += 1
        n = len(flow)
        assert n <= 64
        assert flow.packet_index.tolist() == list(range(n)), flow_id
        assert flow.timestamp[0] == 0 and flow.direction[0] == 0
        assert (np.diff(flow.frame) > 0).all(), flow_id  # capture order
        assert len(set(flow.source)) == 1 and len(set(flow.label)) == 1
        assert (flow.wire_length > 0).all()
        # a flow is one bidirectional 5-tuple: direction 1 packets come from the other end
        for h, sport, dport in (("tcp", "tcp_sprt", "tcp_dprt"), ("udp", "udp_sport", "udp_dport")):
            present = layout.header_present(flow.nprint, h)
            if present.all():
                s, d = layout.field_values(flow.nprint, sport), layout.field_values(flow.nprint, dport)
                fwd, rev = flow.direction == 0, flow.direction == 1
                assert len(set(s[fwd])) == 1 and len(set(d[fwd])) == 1
                if rev.any():
                    assert set(s[rev]) == set(d[fwd]) and set(d[rev]) == set(s[fwd])
    assert flows == sum(summary["flows"].values())


def test_rerun_is_idempotent_and_workers_give_the_same_dataset(shared_data: Path, tmp_path: Path) -> None:
    inputs = [shared_data / "pcaps/zoom/zoom.pcap", shared_data / "pcaps/whatsapp/wa_voice.pcap",
              shared_data / "pcaps/facebook/facebook.pcap"]
    out = tmp_path / "a"
    first = encode_paths(inputs, out, packets=32, manifest=shared_data / "manifest.csv", progress=False)
    names = sorted(p.name for p in out.glob("*.parquet"))
    before = {n: pq.read_table(out / n) for n in names}
    summary_text = (out / "summary.json").read_text()
    (out / "stale-00000000-0000.parquet").write_bytes(b"left over from an older run")
    again = encode_paths(inputs, out, packets=32, manifest=shared_data / "manifest.csv", progress=False)
    assert sorted(p.name for p in out.glob("*.parquet")) == names
    assert all(pq.read_table(out / n).equals(before[n]) for n in names)
    assert (out / "summary.json").read_text() == summary_text
    assert first["packets"] == again["packets"]
    par = tmp_path / "b"
    encode_paths(inputs, par, packets=32, manifest=shared_data / "manifest.csv", workers=2, progress=False)
    assert sorted(p.name for p in par.glob("*.parquet")) == names
    assert all(pq.read_table(par / n).equals(before[n]) for n in names)


def test_label_rules(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "pcaps/facebook/facebook.pcap"
    (tmp_path / "in/videos").mkdir(parents=True)
    (tmp_path / "flat").mkdir()
    shutil.copy(src, tmp_path / "in/videos/baseline_exp_41.pcap")  # class folder wins over _NN
    shutil.copy(src, tmp_path / "in/videos/capture.pcap")
    shutil.copy(src, tmp_path / "flat/netflix_03.pcap")  # original NetDiffusion naming, flat folder
    shutil.copy(src, tmp_path / "flat/misc.pcap")  # parent folder
    manifest = tmp_path / "in/manifest.csv"
    manifest.write_text("path,label,macro\nvideos/capture.pcap,webex,conferencing\n")
    out = encode_paths([tmp_path / "in", tmp_path / "flat"], tmp_path / "o1", progress=False)
    got = {f["file"]: f["label"] for f in out["files"]}
    assert got == {"videos/baseline_exp_41.pcap": "videos", "videos/capture.pcap": "videos",
                   "netflix_03.pcap": "netflix", "misc.pcap": "flat"}
    single = encode_paths([tmp_path / "flat/netflix_03.pcap"], tmp_path / "o3", progress=False)
    assert single["files"][0]["label"] == "netflix"
    out = encode_paths([tmp_path / "in"], tmp_path / "o2", manifest=manifest, progress=False)
    got = {f["file"]: (f["label"], f["macro"]) for f in out["files"]}
    assert got["videos/capture.pcap"] == ("webex", "conferencing")
    assert got["videos/baseline_exp_41.pcap"] == ("videos", "")


def test_ndpi_flow_labels_keep_only_the_application_flows(shared_data: Path, tmp_path: Path) -> None:
    capture = shared_data / "pcaps/netflix/netflix.pcap"
    plain = encode_paths([capture], tmp_path / "plain", manifest=shared_data / "manifest.csv", progress=False)
    kept = encode_paths([capture], tmp_path / "kept", manifest=shared_data / "manifest.csv",
                        flow_labels=shared_data / "ndpi_flow_labels.csv", progress=False)
    assert kept["skipped"]["ndpi_filtered"] > 0
    assert 0 < kept["flows"]["netflix"] < plain["flows"]["netflix"]
    layout = read_layout(tmp_path / "kept")
    rows = read_packets(tmp_path / "kept")
    udp = layout.header_present(rows.nprint, "udp")
    ports = set(layout.field_values(rows.nprint[udp], "udp_dport")) | set(layout.field_values(rows.nprint[udp],
                                                                                              "udp_sport"))
    assert 1900 not in ports  # SSDP is nDPI "System" noise, not Netflix
    # DNS: nDPI's DNS.NetFlix lookups (10) name the label and stay; its 2 plain DNS flows do not
    dns = udp & ((layout.field_values(rows.nprint, "udp_dport") == 53) | (layout.field_values(rows.nprint, "udp_sport") == 53))
    assert len(set(rows.flow_id[dns])) == 10
    plain_rows = read_packets(tmp_path / "plain")
    pudp = layout.header_present(plain_rows.nprint, "udp")
    assert 1900 in set(layout.field_values(plain_rows.nprint[pudp], "udp_dport"))
    pdns = pudp & ((layout.field_values(plain_rows.nprint, "udp_dport") == 53)
                   | (layout.field_values(plain_rows.nprint, "udp_sport") == 53))
    assert len(set(plain_rows.flow_id[pdns])) == 12


def _flow_capture(path: Path, n: int) -> None:
    """One TCP flow of ``n`` packets alternating direction, plus an ICMP echo request/reply pair."""
    frames, ts = [], []
    for i in range(n):
        a, b = ("10.0.0.1", "10.0.0.2") if i % 2 == 0 else ("10.0.0.2", "10.0.0.1")
        sp, dp = (40000, 80) if i % 2 == 0 else (80, 40000)
        frames.append(bytes(Ether(dst="02:00:00:00:00:01") / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, seq=i)))
        ts.append(1_000_000_000_000 + i * 1_000_003)
    frames.append(bytes(Ether(dst="02:00:00:00:00:01") / IP(src="10.0.0.9", dst="10.0.0.8") / ICMP(type=8, id=77)))
    frames.append(bytes(Ether(dst="02:00:00:00:00:01") / IP(src="10.0.0.8", dst="10.0.0.9") / ICMP(type=0, id=77)))
    ts += [ts[-1] + 5, ts[-1] + 9]
    write_pcap(path, frames, np.array(ts))


@pytest.mark.filterwarnings("ignore")
def test_packets_cap_windows_and_icmp_pairing(tmp_path: Path) -> None:
    (tmp_path / "in/demo").mkdir(parents=True)
    _flow_capture(tmp_path / "in/demo/demo.pcap", 25)
    capped = encode_paths([tmp_path / "in"], tmp_path / "capped", packets=10, progress=False)
    assert capped["flows"] == {"demo": 2} and capped["skipped"]["beyond_packets"] == 15
    rows = read_packets(tmp_path / "capped")
    flows = dict(rows.flows())
    assert sorted(len(f) for f in flows.values()) == [2, 10]
    icmp = next(f for f in flows.values() if len(f) == 2)
    assert icmp.direction.tolist() == [0, 1] and icmp.timestamp.tolist() == [0, 4]
    tcp = next(f for f in flows.values() if len(f) == 10)
    assert tcp.direction.tolist() == [0, 1] * 5
    assert tcp.timestamp.tolist() == [i * 1_000_003 for i in range(10)]
    win = encode_paths([tmp_path / "in"], tmp_path / "win", packets=10, windows=True, progress=False)
    assert win["flows"] == {"demo": 4} and "beyond_packets" not in win["skipped"]
    rows = read_packets(tmp_path / "win")
    sizes = sorted((fid, len(f), f.timestamp[0], f.frame[0]) for fid, f in rows.flows())
    assert [s[1] for s in sizes] == [10, 10, 5, 2]
    assert all(s[2] == 0 for s in sizes)  # each window's time starts at its first packet
    assert [s[3] for s in sizes[:3]] == [1, 11, 21]
    narrow = encode_paths([tmp_path / "in"], tmp_path / "narrow", packets=10, headers=("tcp", "ipv4"),
                          progress=False)
    assert read_layout(tmp_path / "narrow").columns == Layout(["ipv4", "tcp"]).columns
    assert narrow["width"] == 960


def test_batch_boundaries_do_not_change_the_dataset(shared_data: Path, tmp_path: Path) -> None:
    """Flows, positions, directions and window start times carry across reader batches."""
    capture = shared_data / "pcaps/whatsapp/wa_voice.pcap"
    whole = encode_paths([capture], tmp_path / "whole", packets=5, windows=True, progress=False)
    small = encode_paths([capture], tmp_path / "small", packets=5, windows=True, chunk_bytes=20000,
                         progress=False)
    assert whole["packets"] == small["packets"] == whole["packets_read"] - whole["skipped"].get("non_ip", 0)
    a, b = read_packets(tmp_path / "whole"), read_packets(tmp_path / "small")
    oa, ob = np.lexsort((a.packet_index, a.flow_id)), np.lexsort((b.packet_index, b.flow_id))
    for col in (*META_COLUMNS, "nprint"):
        assert np.array_equal(getattr(a, col)[oa], getattr(b, col)[ob]), col
    capped = encode_paths([capture], tmp_path / "capped", packets=5, chunk_bytes=20000, progress=False)
    c = read_packets(tmp_path / "capped")
    first_windows = a.take(np.char.endswith(a.flow_id.astype(str), "w0000"))
    assert len(c) == capped["packets"] and sorted(c.frame) == sorted(first_windows.frame)


@pytest.mark.filterwarnings("ignore")
def test_icmp_flows_pair_requests_and_replies_and_split_by_type(tmp_path: Path) -> None:
    (tmp_path / "in/icmp").mkdir(parents=True)
    a, b = "10.0.0.1", "10.0.0.2"
    pkts = [IP(src=a, dst=b) / ICMP(type=8, id=5), IP(src=b, dst=a) / ICMP(type=0, id=5),  # echo id 5
            IP(src=a, dst=b) / ICMP(type=8, id=6), IP(src=b, dst=a) / ICMP(type=0, id=6),  # echo id 6
            IP(src=a, dst=b) / ICMP(type=13, id=5), IP(src=b, dst=a) / ICMP(type=14, id=5),  # timestamp
            IP(src=b, dst=a) / ICMP(type=3, code=3), IP(src=b, dst=a) / ICMP(type=3, code=1),  # unreachable
            IP(src=b, dst=a) / ICMP(type=11)]  # time exceeded
    write_pcap(tmp_path / "in/icmp/icmp.pcap", [bytes(Ether(dst="02:00:00:00:00:01") / p) for p in pkts],
               np.arange(len(pkts)) + 1_000)
    encode_paths([tmp_path / "in"], tmp_path / "out", progress=False)
    rows = read_packets(tmp_path / "out")
    groups = sorted(sorted(f.frame.tolist()) for _, f in rows.flows())
    assert groups == [[1, 2], [3, 4], [5, 6], [7, 8], [9]]
    directions = {tuple(f.frame.tolist()): f.direction.tolist() for _, f in rows.flows()}
    assert directions[(1, 2)] == [0, 1] and directions[(7, 8)] == [0, 0]


def test_shards_hold_whole_flow_samples(shared_data: Path, tmp_path: Path) -> None:
    capture = shared_data / "pcaps/zoom/zoom.pcap"
    summary = encode_paths([capture], tmp_path, packets=64, shard_size=50, progress=False)
    shards = shard_paths(tmp_path)
    assert len(shards) == summary["shards"] > 3
    seen: dict[str, str] = {}
    for shard in shards:
        for flow_id in set(pq.read_table(shard, columns=["flow_id"]).column("flow_id").to_pylist()):
            assert flow_id not in seen, f"{flow_id} in {seen.get(flow_id)} and {shard.name}"
            seen[flow_id] = shard.name
    assert len(seen) == sum(summary["flows"].values())
    assert len(read_packets(tmp_path)) == summary["packets"]


def test_corrupt_wire_length_saturates_instead_of_wrapping(tmp_path: Path) -> None:
    """A record claiming ~4 GB on the wire (nDPI's fuzz-2021-06-07 capture) is stored as the int32
    maximum, as tshark shows it, not wrapped to a negative length."""
    import struct

    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2))
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    capture = tmp_path / "huge_wire.pcap"
    capture.write_bytes(head + struct.pack("<IIII", 1, 0, len(frame), 4_093_509_168) + frame
                        + struct.pack("<IIII", 1, 1, len(frame), 60) + frame)
    summary = encode_paths([capture], tmp_path / "out", progress=False)
    assert summary["packets"] == 2
    packets = read_packets(tmp_path / "out")
    assert sorted(packets.wire_length.tolist()) == [60, 2**31 - 1]


def test_atomic_writes_get_the_umask_mode_and_leave_no_temp_files(tmp_path: Path) -> None:
    """Shards and reports are readable as any file the user creates (0666 & ~umask), not 0600."""
    import os

    from netdiffusion.dataset import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
        atomic_write_bytes(tmp_path / "a.json", [b"{", b"}\n"])  # replaced whole, pieces in order
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.json").read_bytes() == b"{}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    atomic_write_bytes(tmp_path / "new" / "deeper" / "b.json", b"1")  # folders made on demand
    assert (tmp_path / "new" / "deeper" / "b.json").read_bytes() == b"1"


@pytest.mark.filterwarnings("ignore")
def test_ndpi_flow_labels_match_a_gzip_compressed_capture(tmp_path: Path) -> None:
    """nDPI lists ``x.pcap``; the same capture gzip-compressed (a supported input) must be filtered alike."""
    import gzip

    (tmp_path / "in/netflix").mkdir(parents=True)
    frames = [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=443)),
              bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=5353, dport=53))]
    write_pcap(tmp_path / "x.pcap", frames, np.array([1_000_000_000, 1_000_000_500]))
    (tmp_path / "in/netflix/x.pcap.gz").write_bytes(gzip.compress((tmp_path / "x.pcap").read_bytes()))
    (tmp_path / "ndpi.csv").write_text(
        "pcap,l4,src,sport,dir,dst,dport,proto,app,category\n"
        "x.pcap,TCP,10.0.0.1,40000,<->,10.0.0.2,443,TLS.NetFlix,NetFlix,Video\n"
        "x.pcap,UDP,10.0.0.1,5353,<->,10.0.0.53,53,DNS,DNS,Network\n")
    out = encode_paths([tmp_path / "in"], tmp_path / "o", flow_labels=tmp_path / "ndpi.csv", progress=False)
    assert out["files"][0]["ndpi_rule"] == "label_match"
    assert out["flows"] == {"netflix": 1} and out["skipped"]["ndpi_filtered"] == 1


def test_early_flush_counts_each_flow_sample_once(shared_data: Path, tmp_path: Path) -> None:
    """A capture flushed early (more kept packets than the buffer holds) has samples spanning flushes;
    the summary still counts every flow sample once."""
    from netdiffusion.encode import encode_file

    capture = shared_data / "pcaps/whatsapp/wa_voice.pcap"
    split = encode_file(capture, "wa_voice.pcap", tmp_path / "split", label="whatsapp", packets=50,
                        max_buffer_rows=300, chunk_bytes=20000)
    assert split["flows_split_across_shards"] and len(split["shards"]) > 1
    rows = read_packets(tmp_path / "split")
    assert split["flows"] == len(np.unique(rows.flow_id))
    whole = encode_file(capture, "wa_voice.pcap", tmp_path / "whole", label="whatsapp", packets=50)
    assert whole["flows"] == split["flows"] and whole["packets"] == split["packets"]


def test_packets_of_an_ip_version_the_layout_leaves_out_are_skipped_and_counted(tmp_path: Path) -> None:
    """Regression (QA on tcpdump 4.99's test captures with --headers ipv4,udp,icmp, session 24):
    IPv6 packets were written as all-absent rows, which are no packets (training read them as
    padding, repair dropped their 114 flows). They are skipped and counted now; a layout of
    transport headers alone still keeps every packet."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    (tmp_path / "in").mkdir()
    frames = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2),
              Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=3, dport=4),
              Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=3, dport=4)]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i
    wrpcap(str(tmp_path / "in" / "demo_1.pcap"), frames)
    v4 = encode_paths([tmp_path / "in"], tmp_path / "v4", headers=("ipv4", "udp"), progress=False)
    assert v4["packets"] == 1 and v4["skipped"] == {"network_header_not_in_layout": 2}
    layout = read_layout(tmp_path / "v4")
    assert layout.header_present(read_packets(tmp_path / "v4").nprint, "ipv4").all()
    both = encode_paths([tmp_path / "in"], tmp_path / "both", headers=("ipv4", "ipv6", "udp"), progress=False)
    assert both["packets"] == 3 and not both["skipped"]
    l4 = encode_paths([tmp_path / "in"], tmp_path / "l4", headers=("udp",), progress=False)
    assert l4["packets"] == 3 and not l4["skipped"]
