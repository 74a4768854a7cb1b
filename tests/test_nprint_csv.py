"""nPrint CSV: the original NetDiffusion files import; export -> import is lossless."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from netdiffusion.cli import main as cli_main
from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.fields import DEFAULT_LAYOUT, Layout
from netdiffusion.nprint_csv import export_dataset, import_files, read_csv


def _csv_rows(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [next(reader) for _ in range(n)]


def test_reference_files_import(shared_data: Path, tmp_path: Path) -> None:
    ref = shared_data / "reference"
    summary = import_files([ref], tmp_path / "ds")
    assert summary["files_read"] == 3 and summary["files_rejected"] == []
    assert summary["packets"] == 3 * 1024 and summary["flows"] == {"netflix": 3}
    rows = read_packets(tmp_path / "ds")
    layout = read_layout(tmp_path / "ds")
    assert layout.columns == DEFAULT_LAYOUT.columns
    for name in ("netflix_01_real_finetune", "netflix_5_generated", "netflix_5_generated_replayable"):
        header, text = _csv_rows(ref / f"{name}.nprint", 5)
        flow = rows.take(np.char.startswith(rows.flow_id.astype(str), name + "-"))
        flow = flow.take(np.argsort(flow.packet_index))
        assert len(flow) == 1024
        position = {c: i for i, c in enumerate(layout.columns)}
        for r, line in enumerate(text):  # every value of the first rows, column by column
            for col, value in zip(header[1:], line[1:], strict=True):
                assert flow.nprint[r, position[col]] == int(value), (name, r, col)
        omitted = set(layout.columns) - set(header)
        if omitted:  # the generated file drops address bits: they import as absent
            idx = [layout.columns.index(c) for c in omitted]
            assert (flow.nprint[:, idx] == -1).all()
    real = rows.take(np.char.startswith(rows.flow_id.astype(str), "netflix_01_real_finetune-"))
    real = real.take(np.argsort(real.packet_index))
    header, text = _csv_rows(ref / "netflix_01_real_finetune.nprint", 1)
    assert header[0] == "src_ip"
    assert real.direction[0] == 0 and 0 < real.direction.sum() < 1024
    assert (real.wire_length[layout.field_values(real.nprint, "ipv4_tl") >= 0] > 14).all()


def test_export_then_import_is_lossless(small_dataset: Path, tmp_path: Path) -> None:
    summary = export_dataset(small_dataset, tmp_path / "csv")
    original = read_packets(small_dataset)
    flows = dict(original.flows())
    assert summary["flows"] == len(flows)
    files = sorted((tmp_path / "csv").rglob("*.nprint"))
    assert len(files) == len(flows)
    header, first = _csv_rows(files[0], 1)
    assert header[:3] == ["src_ip", "tv_sec", "tv_usec"] and header[3:] == DEFAULT_LAYOUT.columns
    rc = cli_main(["import-nprint", "--input", str(tmp_path / "csv"), "--output", str(tmp_path / "back")])
    assert rc == 0
    back = read_packets(tmp_path / "back")
    assert len(back) == len(original)
    for _, flow in back.flows():
        name = Path(str(flow.source[0])).stem
        orig = flows[name]
        assert flow.label[0] == orig.label[0]
        assert np.array_equal(flow.nprint, orig.nprint)
        assert np.array_equal(flow.direction, orig.direction), name
        # the inter-arrival times too (QA: they came back as 0), to the microsecond nPrint keeps
        assert np.array_equal(flow.timestamp, orig.timestamp // 1000 * 1000), name
    # our export's three leading columns are read by the byte-level parser (they went through
    # pyarrow's CSV reader, ~20 ms a file), with the same values as pyarrow's
    from netdiffusion.nprint_csv import _fast_values, _parse_general, read_csv

    raw = files[0].read_bytes()
    assert _fast_values(raw, tuple(header), len(DEFAULT_LAYOUT.columns)) is not None
    _, matrix, extra = read_csv(files[0])
    slow, slow_extra = _parse_general(files[0], tuple(header), tuple(header[3:]))
    assert np.array_equal(matrix, slow) and extra.keys() == slow_extra.keys() == {"src_ip", "tv_sec", "tv_usec"}
    for name in extra:
        assert list(extra[name]) == list(slow_extra[name]), name


def test_export_without_timestamps_has_the_reference_columns(small_dataset: Path, shared_data: Path,
                                                            tmp_path: Path) -> None:
    """QA: the export always added tv_sec/tv_usec after src_ip, which the original NetDiffusion code
    (it drops src_ip by name, every other column is a bit) would read as two bit columns."""
    reference, _ = _csv_rows(shared_data / "reference" / "netflix_01_real_finetune.nprint", 1)
    assert cli_main(["export-nprint", "--input", str(small_dataset), "--output", str(tmp_path / "csv"),
                     "--no-timestamps"]) == 0
    header, first = _csv_rows(sorted((tmp_path / "csv").rglob("*.nprint"))[0], 1)
    assert header == reference and len(first[0]) == len(header)
    assert import_files([tmp_path / "csv"], tmp_path / "back")["files_rejected"] == []


def test_bad_csvs_are_rejected(tmp_path: Path) -> None:
    good = tmp_path / "ok_1.nprint"
    layout = Layout(["ipv4", "udp"])
    good.write_text("src_ip," + ",".join(layout.columns) + "\n" + "1.2.3.4," + ",".join(["0"] * layout.width) + "\n")
    (tmp_path / "bad_values.nprint").write_text("src_ip,ipv4_ver_0\n1.2.3.4,7\n")
    (tmp_path / "no_columns.nprint").write_text("a,b\n1,2\n")
    (tmp_path / "empty.nprint").write_text("")
    (tmp_path / "disorder.nprint").write_text("src_ip,ipv4_ver_1,ipv4_ver_0\n1.2.3.4,0,1\n")
    summary = import_files([tmp_path], tmp_path / "ds", flow_size=1)
    rejected = {Path(r["file"]).name: r["reason"] for r in summary["files_rejected"]}
    assert summary["files_read"] == 1
    assert set(rejected) == {"bad_values.nprint", "no_columns.nprint", "empty.nprint", "disorder.nprint"}
    assert "1 / 0 / -1" in rejected["bad_values.nprint"] and "order" in rejected["disorder.nprint"]
    layout_read, matrix, extra = read_csv(good)
    assert layout_read.headers == ("ipv4", "udp") and matrix.shape == (1, layout.width)
    assert extra["src_ip"].tolist() == ["1.2.3.4"]
    rows = read_packets(tmp_path / "ds")
    assert rows.label.tolist() == ["ok"] and (rows.nprint[:, DEFAULT_LAYOUT.header_slice("tcp")] == -1).all()


def test_round_trip_keeps_the_label_of_a_capture_named_like_label_number(tmp_path: Path) -> None:
    """Exported files live in ``<label>/``; a capture stem such as ``quic_0RTT`` or ``voip_2`` must not
    turn into the label ``quic`` / ``voip`` on import (nPrint's ``<label>_<NN>`` file naming)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from netdiffusion.encode import encode_paths
    from netdiffusion.pcap.writer import write_pcap

    for stem in ("quic_0RTT", "voip_2"):
        (tmp_path / "in/zoom").mkdir(parents=True, exist_ok=True)
        frames = [bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5000, dport=8801))] * 2
        write_pcap(tmp_path / f"in/zoom/{stem}.pcap", frames, np.array([10**9, 10**9 + 5000]))
    encode_paths([tmp_path / "in"], tmp_path / "ds", progress=False)
    export_dataset(tmp_path / "ds", tmp_path / "csv")
    import_files([tmp_path / "csv"], tmp_path / "back")
    assert set(read_packets(tmp_path / "back").label.tolist()) == {"zoom"}
    assert import_files([tmp_path / "csv"], tmp_path / "back2", label=None)["flows"] == {"zoom": 2}


def test_round_trip_keeps_labels_that_are_not_file_safe_and_macros(tmp_path: Path) -> None:
    """Regression (QA, nDPI captures): a class named ``tls web`` or ``chrome/only`` is exported to the
    folder ``tls_web-<hash>/``, and import took that folder name for the label; every macro came back
    empty. The export now records each file's label and macro (``labels.json``) and import uses it."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    from netdiffusion.encode import encode_paths
    from netdiffusion.pcap.writer import write_pcap

    manifest = tmp_path / "manifest.csv"
    rows = {"a.pcap": ("tls web", "web"), "b.pcap": ("chrome/only", "web"), "c.pcap": ("dns", "infra")}
    manifest.write_text("path,label,macro\n" + "".join(f"{p},{lab},{mac}\n" for p, (lab, mac) in rows.items()))
    for n, name in enumerate(rows):
        frames = [bytes(Ether() / IP(src="10.0.0.1", dst=f"10.0.0.{n + 2}") / UDP(sport=5000, dport=53))] * 2
        write_pcap(tmp_path / name, frames, np.array([10**9, 10**9 + 5000]))
    encode_paths([tmp_path / p for p in rows], tmp_path / "ds", manifest=manifest, progress=False)
    export_dataset(tmp_path / "ds", tmp_path / "csv")
    assert cli_main(["import-nprint", "--input", str(tmp_path / "csv"), "--output", str(tmp_path / "back")]) == 0
    back = read_packets(tmp_path / "back")
    got = {(str(lab), str(mac)) for lab, mac in zip(back.label.tolist(), back.macro.tolist(), strict=True)}
    assert got == set(rows.values())
    # explicit --label / --macro still win; a file given directly (not its folder) finds the record too
    one = sorted((tmp_path / "csv").rglob("*.nprint"))[0]
    summary = import_files([one], tmp_path / "one")
    assert list(summary["flows"]) == [str(read_packets(tmp_path / "one").label[0])]
    assert str(read_packets(tmp_path / "one").label[0]) in {lab for lab, _ in rows.values()}
    import_files([tmp_path / "csv"], tmp_path / "forced", label="x", macro="y")
    forced = read_packets(tmp_path / "forced")
    assert set(forced.label.tolist()) == {"x"} and set(forced.macro.tolist()) == {"y"}
    # the record is not an nPrint file: nothing rejected
    assert import_files([tmp_path / "csv"], tmp_path / "again")["files_rejected"] == []


def test_columns_of_ethernet_and_payload_headers_are_read_past_and_counted(shared_data: Path, tmp_path: Path) -> None:
    """nPrint run with -e (ethernet) or -p (payload bits) adds headers no field table here holds:
    the file imports with the same IP/TCP/UDP bits, and the summary says what was read past."""
    ref = shared_data / "reference" / "netflix_01_real_finetune.nprint"
    header, *lines = ref.read_text().splitlines()
    eth = [f"eth_{name}_{i}" for name, bits in (("dhost", 48), ("shost", 48), ("ethertype", 16)) for i in range(bits)]
    payload = [f"payload_bit_{i}" for i in range(32)]
    first, rest = header.split(",", 1)
    wide = tmp_path / "in" / "netflix_01.nprint"
    wide.parent.mkdir()
    cells = lambda n, k: ",".join(str((k + i) % 3 - 1) for i in range(n))  # noqa: E731 - any -1/0/1 values
    wide.write_text("\n".join([",".join([first, *eth, rest, *payload])]
                              + [f"{line.split(',', 1)[0]},{cells(len(eth), k)},{line.split(',', 1)[1]},"
                                 f"{cells(len(payload), k)}" for k, line in enumerate(lines)]) + "\n")
    plain = import_files([ref], tmp_path / "plain")
    summary = import_files([wide], tmp_path / "wide")
    assert summary["files_rejected"] == [] and summary["packets"] == plain["packets"] == 1024
    assert summary["files_with_ignored_headers"] == {"eth": 1, "payload": 1}
    assert "files_with_ignored_headers" not in plain
    assert np.array_equal(read_packets(tmp_path / "wide").nprint, read_packets(tmp_path / "plain").nprint)
    typo = tmp_path / "typo.nprint"
    typo.write_text(f"{first},ethx_dhost_0,{rest}\n")
    assert "unknown column(s) ['ethx_dhost_0']" in import_files([typo], tmp_path / "t")["files_rejected"][0]["reason"]
