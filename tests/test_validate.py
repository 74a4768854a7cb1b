"""The validator finds real problems (the paper's generated pcap) and passes clean captures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netdiffusion.validate import ReplayNamespace, tshark_file, validate_dir

REFERENCE = "reference/netflix_5_generated_replayable.pcap"


def test_reference_generated_pcap_fails_with_bad_checksums(shared_data: Path) -> None:
    counts = tshark_file(shared_data / REFERENCE)
    # measured with tshark (see the shared data README): every TCP checksum of that file is bad
    assert counts["packets"] == 1024
    assert counts["bad_checksums"] >= 1024
    assert counts["tcp_flags"].get("reused_ports", 0) > 0  # stray SYNs restart the connection
    assert counts["tcp_errors"] > 0


def test_cli_exit_status_and_report(shared_data: Path, small_dataset: Path, tmp_path: Path) -> None:
    from netdiffusion.repair import repair_dataset

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "paper.pcap").write_bytes((shared_data / REFERENCE).read_bytes())
    cli = [sys.executable, "-m", "netdiffusion", "validate", "--no-tcpreplay"]
    proc = subprocess.run([*cli, "--input", str(bad), "--report", str(tmp_path / "bad.json")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "bad checksums 1024" in proc.stdout or "bad checksums" in proc.stdout
    report = json.loads((tmp_path / "bad.json").read_text())
    assert report["failed"] == ["paper.pcap"]
    assert "bad_checksums" in report["files"][0]["failed_checks"]
    assert report["files"][0]["capinfos"]["Number of packets"] == "1024"

    from netdiffusion.dataset import read_layout, read_packets, write_fields, write_shard

    packets = read_packets(small_dataset, labels=["whatsapp"])
    packets = packets.take(packets.flow_id == packets.flow_id[0])
    data = tmp_path / "one"
    write_fields(data, read_layout(small_dataset))
    write_shard(packets, data / "part.parquet")
    repair_dataset(data, tmp_path / "good", progress=False)
    proc = subprocess.run([*cli, "--input", str(tmp_path / "good")], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_replay_namespace_is_removed(small_dataset: Path, tmp_path: Path) -> None:
    from netdiffusion.repair import repair_dataset

    repair_dataset(small_dataset, tmp_path / "p", progress=False)
    one = sorted((tmp_path / "p" / "zoom").glob("*.pcap"))[0]
    with ReplayNamespace() as ns:
        name = ns.name
        assert name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        sent = ns.replay(one)
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    res = validate_dir(one, progress=False, tcpreplay=False)
    assert sent["sent"] == res["totals"]["packets"] and sent["failed"] == 0


def test_payload_dissectors_chosen_by_port_are_off(tmp_path: Path) -> None:
    """Payloads are synthetic: a zero payload on UDP 521 is 'malformed RIPng' to plain tshark (seen
    on generated telegram flows), but no header is wrong, so validation must not count it. The
    headers themselves stay checked (a bad UDP checksum is still caught)."""
    from scapy.all import IP, UDP, Ether, Raw, wrpcap

    from netdiffusion.validate import HEADER_PROTOCOLS, payload_protocols

    assert "ripng" in payload_protocols() and not HEADER_PROTOCOLS & set(payload_protocols())
    pkt = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=521) / Raw(bytes(70))  # not a whole RIPng entry
    good = tmp_path / "good.pcap"
    wrpcap(str(good), [pkt])
    plain = subprocess.run(["tshark", "-r", str(good), "-T", "fields", "-e", "_ws.malformed"],
                           capture_output=True, text=True, check=True).stdout
    assert "Malformed" in plain  # what plain tshark says
    result = tshark_file(good)
    assert (result["malformed"], result["expert_errors"], result["bad_checksums"]) == (0, 0, 0), result
    bad = tmp_path / "bad.pcap"
    broken = Ether(bytes(pkt))
    broken[UDP].chksum ^= 0x1234
    wrpcap(str(bad), [broken])
    assert tshark_file(bad)["bad_checksums"] == 1


def test_a_pcap_without_packets_fails_as_empty(tmp_path: Path) -> None:
    """A header-only pcap is a flow the user asked for and did not get: the ``empty`` check fails
    it (counted in totals); a non-empty file is judged as before."""
    import struct

    from scapy.all import IP, UDP, Ether, wrpcap

    (tmp_path / "empty.pcap").write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    wrpcap(str(tmp_path / "good.pcap"), [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=40001)])
    result = validate_dir(tmp_path, tcpreplay=False, progress=False)
    assert result["failed"] == ["empty.pcap"]
    files = {f["file"]: f for f in result["files"]}
    assert files["empty.pcap"]["failed_checks"] == ["empty"] and files["empty.pcap"]["empty"] == 1
    assert files["good.pcap"]["ok"] and files["good.pcap"]["empty"] == 0
    assert result["totals"]["empty"] == 1 and result["totals"]["thresholds"]["empty"] == 0
    from netdiffusion.validate import summary_text

    assert "empty 1" in summary_text(result)
    (tmp_path / "garbage.pcap").write_bytes(b"garbage")  # the summary says why each file failed
    lines = summary_text(validate_dir(tmp_path, tcpreplay=False, progress=False)).splitlines()
    assert lines[lines.index("failed:") + 1:] == [
        "  empty.pcap: empty", "  garbage.pcap: scapy_errors (scapy: Scapy_Exception: Not a supported capture file)"]
    (tmp_path / "garbage.pcap").unlink()
    allowed = validate_dir(tmp_path, tcpreplay=False, progress=False, thresholds={"empty": 1})
    assert allowed["failed"] == []


def test_every_capture_under_the_folder_is_validated_not_only_pcap(tmp_path: Path, shared_data: Path) -> None:
    """A folder of ``*.pcapng`` / ``*.cap`` captures was reported as 'no *.pcap files' and a mixed
    folder validated only its ``*.pcap`` ones: the rest passed unseen."""
    source = next(p for p in sorted((shared_data / "pcaps").rglob("*.pcap")) if p.stat().st_size < 200_000)
    (tmp_path / "in" / "a").mkdir(parents=True)
    subprocess.run(["editcap", "-F", "pcapng", str(source), str(tmp_path / "in" / "a" / "x.pcapng")], check=True)
    (tmp_path / "in" / "a" / "y.CAP").write_bytes(source.read_bytes())
    (tmp_path / "in" / "a" / "notes.txt").write_text("not a capture")
    report = validate_dir(tmp_path / "in", progress=False, tcpreplay=False)
    assert sorted(f["file"] for f in report["files"]) == ["a/x.pcapng", "a/y.CAP"]


def _record_without(path: Path, drop: int, out: Path) -> None:
    """``path`` (classic pcap) without its record number ``drop`` (0-based)."""
    import struct

    data = path.read_bytes()
    head, at, records = data[:24], 24, []
    while at < len(data):
        incl = struct.unpack("<I", data[at + 8:at + 12])[0]
        records.append(data[at:at + 16 + incl])
        at += 16 + incl
    out.write_bytes(head + b"".join(r for i, r in enumerate(records) if i != drop))


def _big_endian(path: Path, out: Path) -> None:
    """``path`` (a little-endian pcap, as repair writes them) rewritten big-endian."""
    import struct

    data = path.read_bytes()
    chunks, at = [struct.pack(">IHHiIII", *struct.unpack("<IHHiIII", data[:24]))], 24
    while at < len(data):
        incl = struct.unpack("<I", data[at + 8:at + 12])[0]
        chunks.append(struct.pack(">IIII", *struct.unpack("<IIII", data[at:at + 16])) + data[at + 16:at + 16 + incl])
        at += 16 + incl
    out.write_bytes(b"".join(chunks))


def test_batched_tshark_reports_each_file_as_if_read_alone(small_dataset: Path, tmp_path: Path,
                                                           shared_data: Path, monkeypatch) -> None:
    """Files of one conversation each are read by one tshark per batch (one tshark per file spent
    most of its time starting): every file's counts must equal those of tshark on that file alone,
    also for files that repeat another's conversation (never batched together: no 'reused ports'),
    a broken checksum, a lost segment, the paper's pcap, and files read alone (pcapng, gzip)."""
    import gzip

    from netdiffusion import validate
    from netdiffusion.repair import repair_dataset

    repair_dataset(small_dataset, tmp_path / "in", progress=False)
    flows = sorted((tmp_path / "in").rglob("*.pcap"))
    tcp = next(f for f in flows if f.parent.name == "zoom" and f.stat().st_size > 3000)
    odd = tmp_path / "in" / "odd"
    odd.mkdir()
    (odd / "copy.pcap").write_bytes(tcp.read_bytes())  # the same conversation twice
    broken = bytearray(tcp.read_bytes())
    broken[-1] ^= 0xFF  # the last byte of the last packet (payload): its checksum no longer holds
    (odd / "bad_checksum.pcap").write_bytes(bytes(broken))
    _record_without(tcp, 3, odd / "lost_segment.pcap")
    (odd / "paper.pcap").write_bytes((shared_data / REFERENCE).read_bytes())
    subprocess.run(["editcap", "-F", "pcapng", str(tcp), str(odd / "ng.pcapng")], check=True)
    (odd / "zipped.pcap").write_bytes(gzip.compress(tcp.read_bytes()))
    for f in flows[:3]:  # batched among themselves (their own header), apart from the others
        _big_endian(f, odd / f"be-{f.name}")

    files = validate.capture_files(tmp_path / "in")
    probes = [validate._probe(f) for f in files]
    batches = validate.batch_files(probes)
    assert len(batches) < len(files) / 4  # batching happened
    by_name = {f.name: i for i, f in enumerate(files)}
    assert probes[by_name["ng.pcapng"]].header is None and probes[by_name["zipped.pcap"]].header is None
    same = {by_name[tcp.name], by_name["copy.pcap"], by_name["bad_checksum.pcap"], by_name["lost_segment.pcap"]}
    assert all(len(same & set(b)) <= 1 for b in batches)  # one conversation per batch at most

    batched = validate.validate_dir(tmp_path / "in", progress=False, tcpreplay=False)
    monkeypatch.setattr(validate, "BATCH_FILES", 1)
    alone = validate.validate_dir(tmp_path / "in", progress=False, tcpreplay=False)
    assert [{k: v for k, v in r.items()} for r in batched["files"]] == alone["files"]
    assert batched["failed"] == alone["failed"] == ["odd/bad_checksum.pcap", "odd/lost_segment.pcap", "odd/paper.pcap"]
    rec = {r["file"]: r for r in batched["files"]}
    assert rec["odd/bad_checksum.pcap"]["bad_checksums"] == 1
    assert rec["odd/lost_segment.pcap"]["tcp_flags"].get("lost_segment") == 1
    assert rec["odd/copy.pcap"]["ok"] and rec["odd/zipped.pcap"]["ok"] and rec["odd/ng.pcapng"]["ok"]
    big = [by_name[f"be-{f.name}"] for f in flows[:3]]
    assert any(set(big) <= set(b) for b in batches) and all(rec[f"odd/be-{f.name}"]["ok"] for f in flows[:3])
    assert [rec[f"odd/be-{f.name}"]["packets"] for f in flows[:3]] == [rec[str(f.relative_to(tmp_path / "in"))]["packets"]
                                                                        for f in flows[:3]]


def test_batched_tcpreplay_names_the_file_whose_packet_failed(tmp_path: Path) -> None:
    """tcpreplay of many files in one run counts them together; when a packet fails, each file of
    that run is replayed alone so the report names the one it came from."""
    import struct

    from scapy.all import IP, UDP, Ether, wrpcap

    for i in range(3):
        wrpcap(str(tmp_path / f"f{i}.pcap"),
               [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000 + i, dport=53)] * (i + 1))
    one = (tmp_path / "f1.pcap").read_bytes()
    ts1, ts2, _, _ = struct.unpack("<IIII", one[24:40])
    # a 10-byte frame: the kernel refuses it (EINVAL), tcpreplay counts it failed
    (tmp_path / "f1.pcap").write_bytes(one[:24] + struct.pack("<IIII", ts1, ts2, 10, 10) + one[40:50])
    with ReplayNamespace() as ns:
        clean = ns.replay_many([tmp_path / "f0.pcap", tmp_path / "f2.pcap"], [1, 3])
        mixed = ns.replay_many([tmp_path / f"f{i}.pcap" for i in range(3)], [1, 1, 3])
    assert clean == [{"sent": 1, "failed": 0, "truncated": 0, "rc": 0}, {"sent": 3, "failed": 0, "truncated": 0, "rc": 0}]
    assert [(r["sent"], r["failed"]) for r in mixed] == [(1, 0), (0, 1), (3, 0)]
    report = validate_dir(tmp_path, progress=False, tcpreplay=True)
    assert report["failed"] == ["f1.pcap"] and "tcpreplay_failed" in report["files"][1]["failed_checks"]


def test_tcpreplay_sends_gzip_and_pcapng_captures_and_names_what_it_cannot(tmp_path: Path) -> None:
    """Regression (QA on Wireshark's test captures): tshark, capinfos, scapy and encode read gzip
    and pcapng, but tcpreplay reads no gzip ('unknown file format') and silently sends nothing from
    a pcapng of several interfaces: 56 of 119 valid captures were reported unsent. They are
    replayed from a copy it reads; a pcapng of two link types (which no pcap holds) stays unsent,
    with a reason instead of a bare count."""
    import gzip

    from scapy.all import IP, UDP, Ether, wrpcap

    folder = tmp_path / "in"
    folder.mkdir()
    eth = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=40000, dport=53) / b"q"] * 3
    wrpcap(str(tmp_path / "a.pcap"), eth)
    wrpcap(str(tmp_path / "b.pcap"), eth[:2])
    (folder / "plain.pcap.gz").write_bytes(gzip.compress((tmp_path / "a.pcap").read_bytes()))
    # two interfaces of one link type (mergecap writes pcapng), then compressed
    subprocess.run(["mergecap", "-w", str(tmp_path / "two.pcapng"), str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap")],
                   check=True)
    (folder / "two.pcapng.gz").write_bytes(gzip.compress((tmp_path / "two.pcapng").read_bytes()))
    wrpcap(str(tmp_path / "raw.pcap"), [IP(src="10.0.0.3", dst="10.0.0.4") / UDP(sport=1, dport=2)], linktype=101)
    subprocess.run(["mergecap", "-w", str(folder / "mixed.pcapng"), str(tmp_path / "a.pcap"), str(tmp_path / "raw.pcap")],
                   check=True)
    report = validate_dir(folder, progress=False, tcpreplay=True)
    rec = {r["file"]: r for r in report["files"]}
    assert rec["plain.pcap.gz"]["tcpreplay"]["sent"] == 3 and rec["plain.pcap.gz"]["ok"]
    assert rec["two.pcapng.gz"]["tcpreplay"]["sent"] == 5 and rec["two.pcapng.gz"]["ok"]
    mixed = rec["mixed.pcapng"]
    assert mixed["tcpreplay_unsent"] == 4 and "tcpreplay_unsent" in mixed["failed_checks"]
    assert mixed["tcpreplay"]["error"] == "sent none of 4 packets and gave no reason"


def test_ports_reused_after_a_close_are_legitimate_and_not_before(tmp_path: Path) -> None:
    """A client opening a new connection on the ports of one both sides closed (FIN) or one side
    reset is normal TCP (tcpflow's test captures hold it): tshark notes ``reused_ports``, which
    counts as a TCP error only where the connection before never closed."""
    from tests.tcp_sessions import write_sessions

    after_fin = tshark_file(write_sessions(tmp_path / "fin.pcap", ["fin", "fin", "rst", "fin"]))
    assert after_fin["tcp_flags"].get("reused_ports_after_close") == 3
    assert after_fin["tcp_errors"] == 0 and "reused_ports" not in after_fin["tcp_flags"]
    unclosed = tshark_file(write_sessions(tmp_path / "open.pcap", ["fin", "none", "fin"]))
    assert unclosed["tcp_flags"].get("reused_ports") == 1  # the third SYN, after a connection left open
    assert unclosed["tcp_flags"].get("reused_ports_after_close") == 1 and unclosed["tcp_errors"] == 1
    report = validate_dir(tmp_path, progress=False, tcpreplay=False)
    assert [f["ok"] for f in sorted(report["files"], key=lambda f: f["file"])] == [True, False]
