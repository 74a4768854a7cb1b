"""Sample data: nDPI test captures from Debian's ndpi source package, or the shared data set."""

from __future__ import annotations

import csv
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from netdiffusion import sample_data


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _ndpi_line(i: int, r: dict[str, str]) -> str:
    """A flow line as ndpiReader 4.2 prints it in tests/result/*.out (from a flow-labels row)."""
    v6 = ":" in r["src"]
    src = f"[{r['src']}]" if v6 else r["src"]
    dst = f"[{r['dst']}]" if v6 else r["dst"]
    cat = f"[cat: {r['category']}/5]" if r["category"] else ""
    sni = f"[Hostname/SNI: {r['sni']}]" if r["sni"] else ""
    return (f"\t{i}\t{r['l4']} {src}:{r['sport']} {r['dir']} {dst}:{r['dport']} [proto: 91.7/{r['proto']}]"
            f"[Encrypted][Confidence: DPI]{cat}[{r['pkts_c2s']} pkts/{r['bytes_c2s']} bytes {r['dir']} "
            f"{r['pkts_s2c']} pkts/{r['bytes_s2c']} bytes][Goodput ratio: 1/2]{sni}[bytes ratio: 0.1]")


def test_mapping_mirrors_the_shared_classes(shared_data):
    mapping = sample_data.read_mapping()
    shared = _rows(shared_data / "manifest.csv")
    assert {r["label"] for r in mapping} == {r["label"] for r in shared}
    by_file = {Path(r["path"]).name: r for r in shared}
    for row in mapping:
        assert by_file[row["file"]]["label"] == row["label"] and by_file[row["file"]]["macro"] == row["macro"]


def test_parse_ndpi_result_roundtrips_the_shared_flow_labels(shared_data):
    rows = [r for r in _rows(shared_data / "ndpi_flow_labels.csv") if r["pcap"] in ("reddit.pcap", "skype.pcap")]
    assert any(":" in r["src"] for r in rows) and any(not r["category"] for r in rows)  # IPv6 + Unknown flows
    for pcap in ("reddit.pcap", "skype.pcap"):
        expected = [r for r in rows if r["pcap"] == pcap]
        text = "Guessed flow protos:\t7\n\n\t1\t 10.0.0.1 \t 4\n" + "\n".join(
            _ndpi_line(i, r) for i, r in enumerate(expected, 1))
        assert sample_data.parse_ndpi_result(text, pcap) == expected


def test_extract_from_a_source_tarball(tmp_path, shared_data):
    """The extraction path on a small tarball laid out like nDPI's: pcaps + results -> manifest + labels."""
    tarball = tmp_path / "ndpi_4.2.orig.tar.gz"
    labels = [r for r in _rows(shared_data / "ndpi_flow_labels.csv") if r["pcap"] == "facebook.pcap"]
    out_text = "\n".join(_ndpi_line(i, r) for i, r in enumerate(labels, 1)).encode()
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(shared_data / "pcaps/facebook/facebook.pcap", "nDPI-4.2/tests/pcap/facebook.pcap")
        info = tarfile.TarInfo("nDPI-4.2/tests/result/facebook.pcap.out")
        info.size = len(out_text)
        tar.addfile(info, io.BytesIO(out_text))
        tar.add(shared_data / "pcaps/zoom/zoom.pcap", "nDPI-4.2/tests/pcap/unmapped.pcap")
    summary = sample_data.extract_sample(tarball, tmp_path / "sample",
                                         [r for r in sample_data.read_mapping() if r["file"] == "facebook.pcap"])
    assert summary == {"captures": 1, "classes": 1, "flows": len(labels), "missing": 0}
    manifest = _rows(tmp_path / "sample/manifest.csv")
    assert manifest == [{"path": "pcaps/facebook/facebook.pcap", "label": "facebook", "macro": "social",
                         "source": sample_data.NDPI_SOURCE}]
    assert (tmp_path / "sample/pcaps/facebook/facebook.pcap").read_bytes() == \
        (shared_data / "pcaps/facebook/facebook.pcap").read_bytes()
    assert _rows(tmp_path / "sample/ndpi_flow_labels.csv") == labels


def test_fallback_to_shared_data(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("NETDIFFUSION_SHARED_DATA", str(shared_data))
    summary = sample_data.prepare(tmp_path / "sample", source="shared")
    assert summary["source"] == "shared" and summary["classes"] == 15
    rows = _rows(tmp_path / "sample/manifest.csv")
    assert rows and all((tmp_path / "sample" / r["path"]).exists() for r in rows)
    # a second auto run sees complete data and does not fetch again
    assert sample_data.prepare(tmp_path / "sample")["source"] == "existing"


def test_no_source_at_all_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDIFFUSION_SHARED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="NETDIFFUSION_SHARED_DATA"):
        sample_data.prepare(tmp_path / "sample", source="shared")


@pytest.mark.slow
def test_real_debian_download_matches_the_shared_captures(tmp_path, shared_data):
    """apt-get source ndpi (127 MB, a few seconds on the Debian mirror): same bytes, same flow labels."""
    summary = sample_data.prepare(tmp_path / "sample", source="debian", cache=tmp_path / "cache")
    assert summary["source"] == "debian"
    assert summary["captures"] == 19 and summary["classes"] == 15 and summary["missing"] == 0
    for row in _rows(tmp_path / "sample/manifest.csv"):
        ours = hashlib.sha256((tmp_path / "sample" / row["path"]).read_bytes()).hexdigest()
        theirs = hashlib.sha256((shared_data / row["path"]).read_bytes()).hexdigest()
        assert ours == theirs, row["path"]
    assert _rows(tmp_path / "sample/ndpi_flow_labels.csv") == _rows(shared_data / "ndpi_flow_labels.csv")


def _fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_failures: int) -> tuple[Path, Path]:
    """An ``apt-get`` first on PATH that behaves like apt behind a flaky mirror: ``update`` exits 0
    with a "W: Failed to fetch" warning and no index the first ``update_failures`` times.
    Returns (the file its calls are logged in, an empty work folder)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (tmp_path / "work").mkdir()
    calls = bin_dir / "calls"
    script = bin_dir / "apt-get"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
lists=$(echo "$@" | sed -n 's/.*Dir::State::Lists=\\([^ ]*\\).*/\\1/p')
case "$*" in
  *" update"*)
    n=$(grep -c ' update' {calls})
    if [ "$n" -le {update_failures} ]; then
      echo "W: Failed to fetch http://mirror/dists/x/InRelease  Temporary failure resolving 'mirror'" >&2
      exit 0
    fi
    touch "$lists/mirror_dists_x_main_source_Sources.lz4" ;;
  *" source "*)
    if ls "$lists"/*_Sources* >/dev/null 2>&1; then echo tarball > ndpi_4.2.orig.tar.gz;
    else echo "E: You must put some 'deb-src' URIs in your sources.list" >&2; exit 100; fi ;;
esac
""")
    script.chmod(0o755)
    return calls, tmp_path / "work"


def test_a_flaky_mirror_is_retried_until_apt_leaves_an_index(tmp_path, monkeypatch):
    """apt-get update exits 0 when its fetch fails; the download checks what apt left and retries
    (a fresh machine's ``make run`` failed on one dropped request before)."""
    calls, work = _fake_apt(tmp_path, monkeypatch, update_failures=1)
    tarball = sample_data.download_ndpi_source(work, pause=0)
    assert tarball == work / "ndpi_4.2.orig.tar.gz"
    lines = calls.read_text().splitlines()
    assert [line.split()[-1] for line in lines] == ["update", "update", "ndpi"]


def test_a_mirror_that_keeps_failing_is_an_error_quoting_apt(tmp_path, monkeypatch):
    calls, work = _fake_apt(tmp_path, monkeypatch, update_failures=99)
    with pytest.raises(RuntimeError, match=r"no Sources index fetched\) after 3 attempts: W: Failed to fetch .*"
                                           r"Temporary failure"):
        sample_data.download_ndpi_source(work, pause=0)
    assert len(calls.read_text().splitlines()) == 3


def test_ndpi_flow_lines_with_a_vlan_or_a_tunnel_are_parsed() -> None:
    """nDPI prints ``[VLAN: n]`` before ``[proto: ...]`` and tunnelled protocols as ``GTP:87/RTP``:
    such lines were skipped (mongodb.pcap's 8 flows, ipv6_in_gtp's 2 ...: 27 of nDPI 4.2's 7,292
    result lines), so ``encode --flow-labels`` dropped those captures' flows. Lines as in nDPI 4.2."""
    text = "\n".join([
        "\t1\tTCP 10.10.10.16:51358 <-> 10.10.10.17:27017 [VLAN: 100][proto: 60/MongoDB][ClearText][Confidence: DPI]"
        "[cat: Database/11][3 pkts/491 bytes <-> 1 pkts/78 bytes][Goodput ratio: 55/0][0.00 sec]",
        "\t2\tUDP [2607:fc20:4052:39e:490a:ea4d:17fe:e09c]:49120 -> [fd00:976a:bc67:193e::7]:25658 [VLAN: 5]"
        "[proto: GTP:87/RTP][ClearText][Confidence: DPI][cat: Media/1][1 pkts/150 bytes -> 0 pkts/0 bytes]",
        "\t3\tUDP 0.0.0.0:68 -> 255.255.255.255:67 [proto: CAPWAP:18/DHCP][ClearText][Confidence: DPI]"
        "[cat: Network/14][5 pkts/2090 bytes -> 0 pkts/0 bytes][Goodput ratio: 72/0][Hostname/SNI: kawai-ipad3]",
        "\t4\t50 [2a01:4c8:c014:144e:1:2:945b:6761]:0 -> [2a01:4c8:f000:f49::4]:0 [VLAN: 2][proto: GTP:79/IPsec]"
        "[Encrypted][Confidence: DPI][cat: VPN/2][1 pkts/166 bytes -> 0 pkts/0 bytes]",
    ])
    rows = sample_data.parse_ndpi_result(text, "x.pcap")
    assert [(r["l4"], r["src"], r["dport"], r["proto"], r["app"], r["category"], r["pkts_c2s"], r["sni"])
            for r in rows] == [
        ("TCP", "10.10.10.16", "27017", "MongoDB", "MongoDB", "Database", "3", ""),
        ("UDP", "2607:fc20:4052:39e:490a:ea4d:17fe:e09c", "25658", "RTP", "RTP", "Media", "1", ""),
        ("UDP", "0.0.0.0", "67", "DHCP", "DHCP", "Network", "5", "kawai-ipad3"),
        ("50", "2a01:4c8:c014:144e:1:2:945b:6761", "0", "IPsec", "IPsec", "VPN", "1", ""),
    ]
