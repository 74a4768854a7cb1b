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
