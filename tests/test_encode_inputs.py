"""Encode inputs: empty folders, duplicate inputs, argument errors, captures that keep no packet and
manifest coverage. Each case must end in a one-line message naming the input (and the summary must
match the data written), never in a silent empty or doubled dataset or a traceback."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from netdiffusion.cli import main as cli_main
from netdiffusion.dataset import read_packets
from netdiffusion.encode import encode_paths
from netdiffusion.pcap.writer import write_pcap

pytestmark = pytest.mark.filterwarnings("ignore")  # scapy's "no route / MAC" warnings


def _tcp_capture(path: Path, flows: int = 2, packets: int = 4, port: int = 40000) -> None:
    """``flows`` IPv4 TCP flows of ``packets`` packets each (ports from ``port`` up)."""
    frames = []
    for f in range(flows):
        for i in range(packets):
            a, b, sp, dp = ("10.0.0.1", "10.0.0.2", port + f, 80) if i % 2 == 0 else ("10.0.0.2", "10.0.0.1", 80,
                                                                                       port + f)
            frames.append(bytes(Ether() / IP(src=a, dst=b) / TCP(sport=sp, dport=dp, seq=i)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(path, frames, np.arange(len(frames)) * 1000 + 1_000_000_000)


def _one_line_errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    return lines


# -- 1. no captures -------------------------------------------------------------------------------

def test_a_folder_without_captures_is_an_error_naming_it(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    out = tmp_path / "out"
    rc = cli_main(["encode", "--input", str(empty), "--output", str(out)])
    assert rc == 2
    [line] = _one_line_errors(capsys)
    assert line.startswith("netdiffusion encode: error:") and "no captures" in line and str(empty) in line
    assert not (out / "summary.json").exists()  # no empty dataset for a later stage to trip on
    (empty / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no captures.*notes\.txt"):
        encode_paths([empty], out, progress=False)
    with pytest.raises(FileNotFoundError, match="no captures"):
        encode_paths([], out, progress=False)


def test_an_empty_folder_next_to_captures_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    _tcp_capture(tmp_path / "in/a/x.pcap")
    with caplog.at_level(logging.WARNING):
        summary = encode_paths([tmp_path / "empty", tmp_path / "in"], tmp_path / "out", progress=False)
    assert summary["files_read"] == 1
    assert any("no captures" in r.getMessage() and str(tmp_path / "empty") in r.getMessage()
               for r in caplog.records)


def test_rotated_captures_are_read_and_other_files_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Regression (QA on Wireshark's test captures): ``many_interfaces.pcapng.1`` and the files of a
    rotating tcpdump (``-C``: x.pcap, x.pcap1, x.pcap2) were left out of a folder without a word.
    They are read now, each with its own stem and the label of its name; other files are named
    in a warning and in summary.json (the manifest given is no such file)."""
    for name in ("zoom.pcap", "zoom.pcap1", "zoom.pcap2", "meet.pcapng.3"):
        _tcp_capture(tmp_path / "in" / name, flows=1)
    (tmp_path / "in/notes.txt").write_text("not a capture")
    (tmp_path / "in/.hidden").write_text("skipped quietly")
    manifest = tmp_path / "in/manifest.csv"
    manifest.write_text("path,label,macro\nzoom.pcap,zoom,video\n")
    with caplog.at_level(logging.WARNING):
        summary = encode_paths([tmp_path / "in"], tmp_path / "out", manifest=manifest, progress=False)
    assert sorted(f["file"] for f in summary["files"]) == ["meet.pcapng.3", "zoom.pcap", "zoom.pcap1", "zoom.pcap2"]
    assert {f["file"]: f["label"] for f in summary["files"]} == {
        "zoom.pcap": "zoom", "zoom.pcap1": "zoom", "zoom.pcap2": "zoom", "meet.pcapng.3": "meet"}
    assert len({s for f in summary["files"] for s in f["shards"]}) == 4  # no two share a shard name
    assert summary["files_not_captures"] == [str(tmp_path / "in/notes.txt")]
    [line] = [r.getMessage() for r in caplog.records if "no capture name" in r.getMessage()]
    assert line.startswith("1 file not read: no capture name") and line.endswith("notes.txt")


# -- 2. duplicate inputs --------------------------------------------------------------------------

def test_the_same_file_twice_is_encoded_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    capture = tmp_path / "in/x.pcap"
    _tcp_capture(capture)
    with caplog.at_level(logging.INFO):
        summary = encode_paths([capture, capture, tmp_path / "in/../in/x.pcap"], tmp_path / "out", progress=False)
    assert summary["files_read"] == 1 and summary["duplicate_inputs"] == 2
    assert summary["packets"] == len(read_packets(tmp_path / "out")) == 8
    assert json.loads((tmp_path / "out/summary.json").read_text())["duplicate_inputs"] == 2
    [line] = [r.getMessage() for r in caplog.records if "already given" in r.getMessage()]
    assert line.startswith("2 inputs name files already given: dropped")


def test_source_names_replace_download_paths_in_the_data_and_messages(tmp_path: Path) -> None:
    """A capture downloaded to a scratch folder (pipeline inputs on S3) is named by where it came
    from: the same input keeps its flow ids and shard names whatever scratch folder held it."""
    ids = []
    for scratch in ("one", "two"):
        capture = tmp_path / scratch / "x.pcap"
        _tcp_capture(capture)
        (tmp_path / scratch / "bad.pcap").write_bytes(b"not a capture at all")
        names = {str(capture): "s3://bucket/in/x.pcap", str(tmp_path / scratch / "bad.pcap"): "s3://bucket/in/bad.pcap"}
        summary = encode_paths([capture, tmp_path / scratch / "bad.pcap"], tmp_path / f"out-{scratch}",
                               progress=False, source_names=names)
        assert [f["file"] for f in summary["files"]] == ["s3://bucket/in/x.pcap"]
        assert [r["file"] for r in summary["files_rejected"]] == ["s3://bucket/in/bad.pcap"]
        packets = read_packets(tmp_path / f"out-{scratch}")
        assert set(packets.source) == {"s3://bucket/in/x.pcap"}
        ids.append(sorted(set(packets.flow_id)))
        ids.append(sorted(p.name for p in (tmp_path / f"out-{scratch}").glob("*.parquet")))
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0]


def test_a_folder_and_a_file_inside_it_are_encoded_once(tmp_path: Path) -> None:
    _tcp_capture(tmp_path / "dupdir/a/x.pcap")
    _tcp_capture(tmp_path / "dupdir/b/y.pcap", port=50000)
    summary = encode_paths([tmp_path / "dupdir", tmp_path / "dupdir/a/x.pcap"], tmp_path / "out", progress=False)
    assert summary["files_read"] == 2 and summary["duplicate_inputs"] == 1
    packets = read_packets(tmp_path / "out")
    assert len(packets) == summary["packets"] == 16
    assert len(set(packets.flow_id)) == sum(summary["flows"].values()) == 4
    assert sorted(f["file"] for f in summary["files"]) == ["a/x.pcap", "b/y.pcap"]  # the first mention wins


def test_copies_under_other_names_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tcp_capture(tmp_path / "in/a/x.pcap")
    (tmp_path / "in/b").mkdir()
    shutil.copy(tmp_path / "in/a/x.pcap", tmp_path / "in/b/x_copy.pcap")
    _tcp_capture(tmp_path / "in/c/z.pcap", port=50000)  # same size, other content: not a copy
    with caplog.at_level(logging.WARNING):
        summary = encode_paths([tmp_path / "in"], tmp_path / "out", progress=False)
    assert summary["files_read"] == 3  # kept (labels may differ on purpose), but flagged
    assert summary["duplicate_content"] == [{"file": "b/x_copy.pcap", "same_as": "a/x.pcap"}]
    [line] = [r.getMessage() for r in caplog.records if "same content" in r.getMessage()]
    assert "b/x_copy.pcap" in line and "a/x.pcap" in line


def test_same_relative_name_in_two_input_folders_keeps_both(tmp_path: Path) -> None:
    """``A/zoom/x.pcap`` and ``B/zoom/x.pcap`` must not write the same shard names."""
    _tcp_capture(tmp_path / "A/zoom/x.pcap")
    _tcp_capture(tmp_path / "B/zoom/x.pcap", flows=3, port=50000)
    summary = encode_paths([tmp_path / "A", tmp_path / "B"], tmp_path / "out", progress=False)
    packets = read_packets(tmp_path / "out")
    assert summary["files_read"] == 2 and len(packets) == summary["packets"] == 20
    assert len(set(packets.flow_id)) == sum(summary["flows"].values()) == 5
    assert len(set(packets.source)) == 2


# -- 3. argument errors ---------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "names"), [
    (["--packets", "0"], "--packets"),
    (["--headers", "ipv4,foo"], "--headers"),
    (["--headers", ","], "--headers"),
    (["--shard-size", "0"], "--shard-size"),
    (["--workers", "0"], "--workers"),
    (["--manifest", "/nonexistent/manifest.csv"], "--manifest"),
    (["--flow-labels", "/nonexistent/flows.csv"], "--flow-labels"),
])
def test_argument_errors_are_one_line(args: list[str], names: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _tcp_capture(tmp_path / "x.pcap")
    rc = cli_main(["encode", "--input", str(tmp_path / "x.pcap"), "--output", str(tmp_path / "out"), *args])
    assert rc == 2
    [line] = _one_line_errors(capsys)
    assert line.startswith(f"netdiffusion encode: error: {names}"), line
    assert not (tmp_path / "out/summary.json").exists()


def test_a_manifest_without_the_columns_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tcp_capture(tmp_path / "x.pcap")
    (tmp_path / "m.csv").write_text("file,class\nx.pcap,a\n")
    rc = cli_main(["encode", "--input", str(tmp_path / "x.pcap"), "--output", str(tmp_path / "out"),
                   "--manifest", str(tmp_path / "m.csv")])
    assert rc == 2
    [line] = _one_line_errors(capsys)
    assert "manifest lacks column" in line


def test_a_manifest_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheet programs save CSV with a UTF-8 BOM; it used to hide the path column
    ("manifest lacks column(s) ['path']"), and the pipeline's reader lost every path."""
    from components.common import read_manifest

    _tcp_capture(tmp_path / "in/x.pcap")
    # ... and spaces around a cell (", x.pcap ,") are the CSV's, not the file name's, as for labels
    (tmp_path / "in/manifest.csv").write_bytes(b"\xef\xbb\xbfpath,label,macro\r\n x.pcap ,zoom,conf\r\n")
    summary = encode_paths([tmp_path / "in/x.pcap"], tmp_path / "out", manifest=tmp_path / "in/manifest.csv",
                           progress=False)
    assert [f["label"] for f in summary["files"]] == ["zoom"]
    assert [(r["path"], r["label"]) for r in read_manifest(str(tmp_path / "in"), tmp_path / "s")] == [
        ("x.pcap", "zoom")]


def test_a_manifest_row_without_a_label_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty label used to become a class named "" all the way through train, generate and repair."""
    from components.common import read_manifest

    _tcp_capture(tmp_path / "in/x.pcap")
    _tcp_capture(tmp_path / "in/y.pcap")
    (tmp_path / "in/manifest.csv").write_text("path,label,macro\nx.pcap,zoom,conf\ny.pcap, ,conf\n")
    rc = cli_main(["encode", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--manifest", str(tmp_path / "in/manifest.csv")])
    assert rc == 2
    [line] = _one_line_errors(capsys)
    assert "empty label" in line and "y.pcap" in line and "line 3" in line
    assert not (tmp_path / "out/summary.json").exists()
    with pytest.raises(ValueError, match="line 3: empty path or label"):
        read_manifest(str(tmp_path / "in"), tmp_path / "s")


# -- 4. captures that keep no packet; manifest coverage -------------------------------------------

def test_files_that_keep_no_packet_are_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    wifi = tmp_path / "in/wifi.pcap"  # 802.11 (link type 105): not a link type we read
    write_pcap(wifi, [bytes(range(40))] * 3, np.arange(3) + 1_000, linktype=105)
    frags = tmp_path / "in/frags.pcap"  # only non-first IPv4 fragments: no transport header
    write_pcap(frags, [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2", frag=10, proto=17) / (b"x" * 20))] * 2,
               np.arange(2) + 1_000)
    _tcp_capture(tmp_path / "in/good.pcap")
    with caplog.at_level(logging.INFO):
        rc = cli_main(["encode", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])
    assert rc == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["files_read"] == 3 and summary["files_without_packets"] == 2
    messages = [r.getMessage() for r in caplog.records]
    [w] = [m for m in messages if "wifi.pcap" in m]
    assert "\n" not in w and "unsupported_linktype 105" in w and "0 of 3" in w
    [f] = [m for m in messages if "frags.pcap" in m]
    assert "ip_fragment" in f and "0 of 2" in f
    assert json.loads(capsys.readouterr().out)["files_without_packets"] == 2
    assert any("2 captures kept no packets" in m for m in messages)  # the closing line
    assert [x for x in summary["files"] if x["file"] == "wifi.pcap"][0]["unsupported_linktypes"] == {"105": 3}


def test_only_empty_captures_fail_the_command(tmp_path: Path) -> None:
    write_pcap(tmp_path / "wifi.pcap", [bytes(range(40))], np.arange(1) + 1_000, linktype=105)
    rc = cli_main(["encode", "--input", str(tmp_path / "wifi.pcap"), "--output", str(tmp_path / "out")])
    assert rc == 1  # a dataset with no rows is of no use to train


def test_manifest_coverage_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("listed.pcap", "unlisted.pcap", "other.pcap"):
        _tcp_capture(tmp_path / "in" / name)
    manifest = tmp_path / "in/manifest.csv"
    manifest.write_text("path,label,macro\nlisted.pcap,zoom,conf\nother.pcap,teams,conf\n"
                        "gone.pcap,meet,conf\nalso_gone.pcap,meet,conf\n")
    with caplog.at_level(logging.INFO):
        summary = encode_paths([tmp_path / "in/listed.pcap", tmp_path / "in/unlisted.pcap"], tmp_path / "out",
                               manifest=manifest, progress=False)
    assert {f["file"].rsplit("/", 1)[-1]: f["label"] for f in summary["files"]} == {"listed.pcap": "zoom",
                                                                                    "unlisted.pcap": "in"}
    assert summary["manifest_check"] == {"captures_not_in_manifest": 1, "rows_not_given": 1, "rows_not_found": 2}
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 capture not in the manifest" in m and "folder" in m for m in messages), messages
    assert any("1 manifest row names a file not given" in m for m in messages), messages
    assert any("2 manifest rows name files not found" in m and "gone.pcap" in m for m in messages), messages


def test_a_class_with_several_macro_classes_is_warned_about(tmp_path: Path, caplog) -> None:
    """QA: a class whose manifest rows disagree on the macro class was accepted silently."""
    from netdiffusion.labels import load_manifest

    (tmp_path / "manifest.csv").write_text("path,label,macro\na.pcap,ipv6,infra\nb.pcap,ipv6,web\nc.pcap,dns,infra\n")
    load_manifest(tmp_path / "manifest.csv")
    assert "class 'ipv6' has rows with several macro classes ['infra', 'web']" in caplog.text
    assert "'dns'" not in caplog.text


def test_a_capture_listed_under_two_classes_is_warned_about(tmp_path: Path, caplog) -> None:
    """QA (e2e on nDPI captures): a manifest listing ssh.pcap as ``alpha`` and again as ``beta`` encoded
    it as ``beta`` only, and ``alpha`` lost it without a word."""
    from netdiffusion.labels import load_manifest

    (tmp_path / "manifest.csv").write_text("path,label\nssh.pcap,alpha\nssh.pcap,beta\nb.pcap,x\nb.pcap,x\n")
    assert set(load_manifest(tmp_path / "manifest.csv").values()) == {("beta", ""), ("x", "")}
    assert "line 3: ssh.pcap is listed again, as class 'beta' (it was 'alpha'): the last row wins" in caplog.text
    assert "b.pcap" not in caplog.text
