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
