"""Decoder: one pcap per flow from the bits alone; re-encoding the output gives the same rows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from netdiffusion.cli import main as cli_main
from netdiffusion.dataset import read_packets
from netdiffusion.decode import BASE_EPOCH_NS, decode_dataset, flow_pcap_path
from netdiffusion.encode import encode_paths


def test_decode_then_encode_gives_the_same_rows(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pcaps"
    summary = decode_dataset(small_dataset, out)
    original = read_packets(small_dataset)
    flows = dict(original.flows())
    assert summary["flows"] == len(flows) and summary["packets"] == len(original)
    assert json.loads((out / "decode_summary.json").read_text())["flows"] == len(flows)
    pcaps = sorted(out.rglob("*.pcap"))
    assert len(pcaps) == len(flows)
    # re-encode the decoded pcaps: labels come back from the folder names, flows from file names
    again_dir = tmp_path / "again"
    again = encode_paths([out], again_dir, packets=64, progress=False)
    assert again["files_rejected"] == [] and again["skipped"] == {}
    back = read_packets(again_dir)
    for source in np.unique(back.source):
        label, name = source.split("/")
        flow = flows[name.removesuffix(".pcap")]
        rows = back.take(back.source == source)
        rows = rows.take(np.argsort(rows.frame))
        assert label == flow.label[0]
        assert np.array_equal(rows.nprint, flow.nprint), source
        assert np.array_equal(rows.timestamp, flow.timestamp) and np.array_equal(rows.direction, flow.direction)
        assert (rows.wire_length == np.array([14 + n for n in _ip_lengths(rows)])).all()


def _ip_lengths(rows) -> list[int]:
    from netdiffusion.dataset import read_layout  # noqa: F401  (layout is the default one here)
    from netdiffusion.fields import DEFAULT_LAYOUT as L

    v4 = L.field_values(rows.nprint, "ipv4_tl")
    v6 = L.field_values(rows.nprint, "ipv6_len")
    return [int(a) if a >= 0 else int(b) + 40 for a, b in zip(v4, v6, strict=True)]


def test_decoded_pcaps_open_in_tshark_and_cli_works(small_dataset: Path, tmp_path: Path) -> None:
    rc = cli_main(["decode", "--input", str(small_dataset), "--output", str(tmp_path / "out")])
    assert rc == 0
    rows = read_packets(small_dataset)
    flow_id, flow = next(iter(rows.flows()))
    path = flow_pcap_path(tmp_path / "out", str(flow.label[0]), flow_id)
    info = subprocess.run(["capinfos", "-c", "-M", "-T", "-r", str(path)], capture_output=True, text=True,
                          check=True).stdout.split("\t")
    assert int(info[1]) == len(flow)
    epoch = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-c", "1"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert epoch.startswith(str(BASE_EPOCH_NS // 1_000_000_000))


def test_flows_with_no_row_in_the_layout_are_skipped_not_written_empty(tmp_path: Path, caplog) -> None:
    """In a dataset of layout ipv4,tcp an IPv6 flow's rows carry no header (encode skips such
    packets since session 24, but older datasets and other generators hold them): decoding it
    would give a 0-packet pcap that looks like a flow. It is skipped and counted instead."""
    import warnings

    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    from netdiffusion.pcap.writer import write_pcap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80)),
                  bytes(Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=40001, dport=443)),
                  bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=80, dport=40000))]
    write_pcap(tmp_path / "in/demo/mixed.pcap", frames, np.arange(3) + 1_000)
    from netdiffusion.dataset import Packets, read_layout, write_fields, write_shard
    from netdiffusion.fields import Layout

    encode_paths([tmp_path / "in"], tmp_path / "full", progress=False)
    full, narrow = read_layout(tmp_path / "full"), Layout(["ipv4", "tcp"])
    rows = read_packets(tmp_path / "full")
    columns = np.concatenate([np.arange(full.header_slice(h).start, full.header_slice(h).stop) for h in narrow.headers])
    write_fields(tmp_path / "data", narrow)
    write_shard(Packets(**{**rows.__dict__, "nprint": np.ascontiguousarray(rows.nprint[:, columns])}),
                tmp_path / "data" / "part.parquet")
    assert len(dict(read_packets(tmp_path / "data").flows())) == 2
    with caplog.at_level("WARNING"):
        summary = decode_dataset(tmp_path / "data", tmp_path / "out")
    assert summary["flows"] == 1 and summary["packets"] == 2
    assert summary["flows_without_packets"] == 1 and summary["rows_without_ip"] == 1
    assert len(list((tmp_path / "out").rglob("*.pcap"))) == 1
    assert json.loads((tmp_path / "out/decode_summary.json").read_text())["flows_without_packets"] == 1
    [line] = [r.getMessage() for r in caplog.records if "no pcap written" in r.getMessage()]
    assert "1 flow had" in line and "ipv4,tcp" in line


def test_names_that_differ_only_in_unsafe_characters_get_their_own_files(small_dataset: Path,
                                                                        tmp_path: Path) -> None:
    """Flows 'f 1' and 'f_1' (or classes 'web video' and 'web_video') were one file name: the
    second overwrote the first while the summary counted both."""
    from netdiffusion.dataset import Packets, read_layout, write_fields, write_shard
    from netdiffusion.names import file_name

    assert file_name("zoom-0001") == "zoom-0001"  # safe names stay as they are
    assert file_name("f 1") != file_name("f_1") == "f_1"
    assert file_name("web video").startswith("web_video-") and file_name("..") not in ("..", "_")
    packets = read_packets(small_dataset)
    two = packets.take(np.flatnonzero(packets.flow_id == packets.flow_id[0]))
    a = Packets(**{**two.__dict__, "flow_id": np.full(len(two), "f 1", dtype=object),
                   "label": np.full(len(two), "web video", dtype=object)})
    b = Packets(**{**two.__dict__, "flow_id": np.full(len(two), "f_1", dtype=object),
                   "label": np.full(len(two), "web_video", dtype=object)})
    write_fields(tmp_path / "in", read_layout(small_dataset))
    write_shard(Packets.concat([a, b]), tmp_path / "in" / "part-0.parquet")
    summary = decode_dataset(tmp_path / "in", tmp_path / "out")
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.pcap"))
    assert summary["flows"] == 2 and len(files) == 2, files
    assert flow_pcap_path(tmp_path / "out", "web_video", "f_1").exists()


def test_a_decode_into_a_folder_with_other_pcaps_says_so(small_dataset: Path, tmp_path: Path, caplog) -> None:
    """QA: decoding into an earlier decode's folder left its pcaps, and the summary counted only this
    run's while validate reads them all; the summary and a warning now count the others."""
    (tmp_path / "out" / "old").mkdir(parents=True)
    (tmp_path / "out" / "old" / "earlier.pcap").write_bytes(b"")
    summary = decode_dataset(small_dataset, tmp_path / "out")
    assert summary["other_pcaps_in_output"] == 1 and "not written by this decode" in caplog.text
    assert decode_dataset(small_dataset, tmp_path / "out")["other_pcaps_in_output"] == 1


def test_a_broken_clock_is_decoded_within_what_a_pcap_can_hold(small_dataset: Path, tmp_path: Path) -> None:
    """Regression (QA on tcpdump 4.99's fuzzed captures, session 24): a flow whose packets lie
    9.2e18 ns after its first overflowed int64 at 2024-01-01 + offset, and the decode stopped. Such
    times are held to ten years after the flow's start (and 1970 for negative ones); the headers
    decode as always."""
    from netdiffusion.dataset import MAX_FLOW_SPAN_NS, Packets, read_layout, write_fields, write_shard

    packets = read_packets(small_dataset)
    flow = packets.take(np.flatnonzero(packets.flow_id == packets.flow_id[0]))
    assert len(flow) >= 3
    ts = np.zeros(len(flow), dtype=np.int64)
    ts[1], ts[2] = 9_218_641_673_709_799_066, -6_797_031_349_329_019_464
    write_fields(tmp_path / "in", read_layout(small_dataset))
    write_shard(Packets(**{**flow.__dict__, "timestamp": ts}), tmp_path / "in" / "part-0.parquet")
    summary = decode_dataset(tmp_path / "in", tmp_path / "out")
    assert summary["flows"] == 1 and summary["packets"] == len(flow)
    path = flow_pcap_path(tmp_path / "out", flow.label[0], flow.flow_id[0])
    from scapy.utils import rdpcap

    times = [int(round(float(p.time))) for p in rdpcap(str(path))[:3]]
    assert times == [BASE_EPOCH_NS // 10**9, (BASE_EPOCH_NS + MAX_FLOW_SPAN_NS) // 10**9, 0]
