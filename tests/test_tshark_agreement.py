"""Acceptance: every nPrint field agrees with tshark's decoding of the same packet.

For each shared capture a sample of frames (the first 100, 200 seeded-random ones and every packet
with IPv4 options) is cut out with editcap and dissected by tshark once; each field of each header
the packet carries is compared with ``Layout.field_values`` / the raw option bits. ``compare_capture``
works on any capture, so the check can be run on captures this suite has never seen:
``python -m tests.test_tshark_agreement CAPTURE...``."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import Packets, iter_shards, read_layout
from netdiffusion.fields import Layout

# nPrint field -> (tshark field, how to turn our value into tshark's)
SCALAR_FIELDS: dict[str, tuple[str, int]] = {
    "ipv4_ver": ("ip.version", 1), "ipv4_hl": ("ip.hdr_len", 4), "ipv4_tos": ("ip.dsfield", 1),
    "ipv4_tl": ("ip.len", 1), "ipv4_id": ("ip.id", 1), "ipv4_rbit": ("ip.flags.rb", 1),
    "ipv4_dfbit": ("ip.flags.df", 1), "ipv4_mfbit": ("ip.flags.mf", 1), "ipv4_foff": ("ip.frag_offset", 1),
    "ipv4_ttl": ("ip.ttl", 1), "ipv4_proto": ("ip.proto", 1), "ipv4_cksum": ("ip.checksum", 1),
    "ipv6_ver": ("ipv6.version", 1), "ipv6_tc": ("ipv6.tclass", 1), "ipv6_fl": ("ipv6.flow", 1),
    "ipv6_len": ("ipv6.plen", 1), "ipv6_nh": ("ipv6.nxt", 1), "ipv6_hl": ("ipv6.hlim", 1),
    "tcp_sprt": ("tcp.srcport", 1), "tcp_dprt": ("tcp.dstport", 1), "tcp_seq": ("tcp.seq_raw", 1),
    "tcp_ackn": ("tcp.ack_raw", 1), "tcp_doff": ("tcp.hdr_len", 4),
    "tcp_cwr": ("tcp.flags.cwr", 1), "tcp_urg": ("tcp.flags.urg", 1),
    "tcp_ackf": ("tcp.flags.ack", 1), "tcp_psh": ("tcp.flags.push", 1), "tcp_rst": ("tcp.flags.reset", 1),
    "tcp_syn": ("tcp.flags.syn", 1), "tcp_fin": ("tcp.flags.fin", 1),
    "tcp_wsize": ("tcp.window_size_value", 1), "tcp_cksum": ("tcp.checksum", 1),
    "tcp_urp": ("tcp.urgent_pointer", 1), "udp_sport": ("udp.srcport", 1), "udp_dport": ("udp.dstport", 1),
    "udp_len": ("udp.length", 1), "udp_cksum": ("udp.checksum", 1), "icmp_type": ("icmp.type", 1),
    "icmp_code": ("icmp.code", 1), "icmp_cksum": ("icmp.checksum", 1),
}
# bits of tshark's 12-bit tcp.flags for the flags whose own field names differ across versions
# (ns became tcp.flags.ae, ecn became tcp.flags.ece, res is a boolean in 4.x)
TCP_FLAG_BITS = {"tcp_res": (9, 7), "tcp_ns": (8, 1), "tcp_ece": (6, 1)}
ADDRESS_FIELDS = {"ipv4_src": "ip.src", "ipv4_dst": "ip.dst", "ipv6_src": "ipv6.src", "ipv6_dst": "ipv6.dst"}
EXTRA_FIELDS = ("tcp.flags", "tcp.options", "icmp.ident", "icmp.seq", "icmp.unused", "icmp.mtu", "ip.opt.type")
TSHARK_FIELDS = sorted({f for f, _ in SCALAR_FIELDS.values()} | set(ADDRESS_FIELDS.values()) | set(EXTRA_FIELDS))
L4_OF_PROTO = {6: "tcp", 17: "udp", 1: "icmp"}


def _int(text: str) -> int:
    text = text.strip()
    if text in ("True", "False"):
        return int(text == "True")
    return int(text, 0)


def _tshark_fields(capture: Path, display_filter: str | None = None) -> list[dict[str, str]]:
    """tshark's field values of every (or every displayed) frame of ``capture``."""
    # every occurrence, ';'-joined: the outer header is the first (ICMP errors quote inner
    # headers); ip.opt.type keeps all its values
    cmd = ["tshark", "-n", "-r", str(capture), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;",
           "-E", "separator=\t", "-o", "tcp.analyze_sequence_numbers:FALSE",
           "-o", "ip.defragment:FALSE"]  # dissect a first fragment's own transport header
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        row = dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True))
        rows.append({k: v if k == "ip.opt.type" else v.split(";")[0] for k, v in row.items()})
    return rows


def _cut_frames(capture: Path, wanted: list[int], folder: Path) -> Path:
    """The wanted frames of ``capture`` in one pcapng file (editcap; raises where it cannot)."""
    # pcapng, not pcap: a pcapng capture may hold interfaces of several link types, which pcap
    # cannot (editcap exits 2 on Wireshark's grpc_stream_reassembly_sample.pcapng.gz)
    sub = folder / "sample.pcapng"
    for start in range(0, len(wanted), 500):  # editcap's argument list stays short
        part = folder / f"part{start}.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", "-r", str(capture), str(part),
                        *map(str, wanted[start:start + 500])], check=True, capture_output=True)
    parts = sorted(folder.glob("part*.pcapng"), key=lambda p: int(p.stem[4:]))
    if len(parts) == 1:
        parts[0].rename(sub)
    else:
        subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(sub), *map(str, parts)], check=True,
                       capture_output=True)
    return sub


def tshark_rows(capture: Path, frames: list[int]) -> list[dict[str, str]]:
    """tshark's first-occurrence field values for the given 1-based frames (in that order).

    The frames are cut out with editcap and dissected alone (fast on large captures); where editcap
    cannot write them (some pcapng blocks, e.g. Wireshark's quic_follow_multistream.pcapng), tshark
    reads the whole capture and displays only those frames."""
    wanted = sorted(set(frames))
    with tempfile.TemporaryDirectory() as d:
        try:
            rows = _tshark_fields(_cut_frames(capture, wanted, Path(d)))
        except subprocess.CalledProcessError:
            rows = _tshark_fields(capture, "frame.number in {" + ",".join(map(str, wanted)) + "}")
    by_frame = dict(zip(wanted, rows, strict=True))
    return [by_frame[f] for f in frames]


def _option_types(option_bytes: bytes) -> list[int]:
    """IPv4 option types in order (EOL ends the list, NOP is one byte)."""
    out, i = [], 0
    while i < len(option_bytes):
        t = option_bytes[i]
        out.append(t)
        if t == 0:
            break
        if t == 1:
            i += 1
            continue
        if i + 1 >= len(option_bytes) or option_bytes[i + 1] < 2:
            break
        i += option_bytes[i + 1]
    return out


def compare_rows(layout: Layout, rows: Packets, ts: list[dict[str, str]]) -> list[str]:
    """Mismatch descriptions (empty = full agreement) between nPrint rows and tshark's fields."""
    problems: list[str] = []
    m = rows.nprint
    present = {h: layout.header_present(m, h) for h in layout.headers}
    values = {k: layout.field_values(m, k) for k in SCALAR_FIELDS if k.split("_")[0] in layout.headers}
    for i, t in enumerate(ts):
        where = f"{rows.source[i]} frame {rows.frame[i]}"
        l3 = "ipv4" if present["ipv4"][i] else "ipv6" if present["ipv6"][i] else None
        if l3 is None:
            problems.append(f"{where}: no network header encoded")
            continue
        proto = int(values["ipv4_proto" if l3 == "ipv4" else "ipv6_nh"][i])
        l4 = L4_OF_PROTO.get(proto) if not (l3 == "ipv6" and proto == 1) else "icmp"
        expected = {l3} | ({l4} if l4 and t.get(f"{l4}.checksum", "") else set())
        got = {h for h in layout.headers if present[h][i]}
        if got != expected:
            problems.append(f"{where}: headers {sorted(got)} but tshark has {sorted(expected)}")
            continue
        for key, (tfield, scale) in SCALAR_FIELDS.items():
            if key.split("_")[0] not in got or key == "ipv4_foff":
                continue
            if t[tfield] == "":
                problems.append(f"{where}: tshark has no {tfield}")
                continue
            want = _int(t[tfield])
            if key == "ipv4_tl" and values[key][i] == 0:
                continue  # TSO capture: the field is 0 and tshark shows the length it presumes instead
            if values[key][i] * scale != want:
                problems.append(f"{where}: {key}={values[key][i] * scale} tshark {tfield}={want}")
        if "tcp" in got:
            flags = _int(t["tcp.flags"])
            for key, (shift, mask) in TCP_FLAG_BITS.items():
                if int(layout.field_values(m[i:i + 1], key)[0]) != (flags >> shift) & mask:
                    problems.append(f"{where}: {key} differs from tshark tcp.flags={flags:#05x}")
        for key, tfield in ADDRESS_FIELDS.items():
            if key.split("_")[0] in got:
                import ipaddress

                bits = np.clip(m[i, layout.field_slice(key)], 0, 1).astype(np.uint8)
                if str(ipaddress.ip_address(np.packbits(bits).tobytes())) != str(ipaddress.ip_address(t[tfield])):
                    problems.append(f"{where}: {key} differs from tshark {t[tfield]}")
        if "tcp" in got:
            opt = m[i, layout.field_slice("tcp_opt")]
            present_bytes = int((opt.reshape(-1, 8) != -1).all(axis=1).sum())
            ours = np.packbits(np.clip(opt, 0, 1).astype(np.uint8))[:present_bytes].tobytes().hex()
            declared = int(values["tcp_doff"][i]) * 4 - 20
            theirs = t["tcp.options"].replace(":", "")
            if present_bytes == declared and ours != theirs:
                problems.append(f"{where}: tcp options {ours} tshark {theirs}")
            if present_bytes < declared and theirs and not theirs.startswith(ours[: len(theirs)]):
                problems.append(f"{where}: truncated tcp options {ours} tshark {theirs}")
        if "icmp" in got:
            roh = int(layout.field_values(m[i:i + 1], "icmp_roh")[0])
            # the outer message's own field first: an error quoting an echo request has no ident of
            # its own, and the first icmp.ident tshark shows is the quoted one's (tcpdump's
            # dhcp-rfc4388.pcap)
            if t["icmp.unused"] and t["icmp.mtu"] and len(t["icmp.unused"].split(",")[0].replace(":", "")) == 4:
                # fragmentation needed (RFC 1191): 2 unused bytes, then the next hop's MTU
                # (pypacker's smtp.pcap)
                want = (int(t["icmp.unused"].split(",")[0].replace(":", ""), 16) << 16) | _int(t["icmp.mtu"].split(",")[0])
            elif t["icmp.unused"]:
                want = int(t["icmp.unused"].replace(":", "")[:8], 16)
            elif t["icmp.ident"]:
                want = (_int(t["icmp.ident"]) << 16) | _int(t["icmp.seq"])
            else:
                want = roh  # tshark shows this type's rest-of-header as typed fields only
            if roh != want:
                problems.append(f"{where}: icmp_roh={roh:#x} tshark {want:#x}")
        if l3 == "ipv4" and values["ipv4_hl"][i] > 5:
            opt = m[i, layout.field_slice("ipv4_opt")]
            n = (int(values["ipv4_hl"][i]) - 5) * 4
            raw = np.packbits(np.clip(opt, 0, 1).astype(np.uint8))[:n].tobytes()
            theirs = [int(x) for x in t["ip.opt.type"].split(";") if x]
            if _option_types(raw)[: len(theirs)] != theirs:
                problems.append(f"{where}: ip option types {_option_types(raw)} tshark {theirs}")
    return problems


def sample_frames(rows: Packets, rng: np.random.Generator, layout: Layout, first: int = 100,
                  random: int = 200) -> np.ndarray:
    """Row indices: the first ``first`` frames, ``random`` seeded-random ones, every IPv4-options packet."""
    order = np.argsort(rows.frame)
    pick = set(order[:first].tolist())
    pick.update(rng.choice(order, size=min(random, len(order)), replace=False).tolist())
    pick.update(np.flatnonzero(layout.field_values(rows.nprint, "ipv4_hl") > 5).tolist())
    return np.array(sorted(pick, key=lambda i: rows.frame[i]))


def compare_capture(capture: Path, rows: Packets, layout: Layout, seed: int = 0) -> tuple[int, list[str]]:
    """Compare a sample of one capture's encoded rows with tshark; returns (compared, problems)."""
    idx = sample_frames(rows, np.random.default_rng(seed), layout)
    sub = rows.take(idx)
    return len(idx), compare_rows(layout, sub, tshark_rows(capture, sub.frame.tolist()))


@pytest.mark.slow
def test_fields_agree_with_tshark_on_every_shared_capture(shared_encoded: Path, shared_data: Path) -> None:
    layout = read_layout(shared_encoded)
    problems: list[str] = []
    compared = captures = 0
    headers_seen: set[str] = set()
    for shard in iter_shards(shared_encoded):
        for source in np.unique(shard.source):
            rows = shard.take(shard.source == source)
            n, p = compare_capture(shared_data / "pcaps" / source, rows, layout)
            compared += n
            captures += 1
            problems += p
            headers_seen.update(h for h in layout.headers if layout.header_present(rows.nprint, h).any())
    assert captures == 29 and compared > 29 * 250
    assert headers_seen == set(layout.headers)
    assert not problems, f"{len(problems)} mismatches, e.g. " + "; ".join(problems[:5])


def test_comparison_catches_a_wrong_bit(shared_data: Path, tmp_path: Path) -> None:
    """The checker itself must fail on a corrupted row (so a pass above means agreement)."""
    from netdiffusion.encode import encode_paths

    encode_paths([shared_data / "pcaps/zoom/zoom.pcap"], tmp_path, packets=8, progress=False)
    layout = read_layout(tmp_path)
    rows = Packets.concat(list(iter_shards(tmp_path)))
    capture = shared_data / "pcaps/zoom/zoom.pcap"
    idx = np.arange(10)
    sub = rows.take(idx)
    truth = tshark_rows(capture, sub.frame.tolist())
    assert compare_rows(layout, sub, truth) == []
    for key in ("ipv4_ttl", "ipv4_src", "tcp_wsize", "tcp_opt", "udp_len", "tcp_ns"):
        bad = sub.take(np.arange(len(sub)))
        bad.nprint = bad.nprint.copy()
        rows_with = np.flatnonzero(layout.field_bits(bad.nprint, key)[:, -1] >= 0)
        if not len(rows_with):
            continue
        col = layout.field_slice(key).stop - 1 if key != "tcp_opt" else layout.field_slice(key).start
        bad.nprint[rows_with[0], col] ^= 1
        assert compare_rows(layout, bad, truth), key


def _two_link_type_capture(shared_data: Path, folder: Path) -> Path:
    """A pcapng of two interfaces of different link types: Ethernet frames of a shared capture,
    then raw IPv4 packets (LINKTYPE_RAW, as a tun device captures them)."""
    from scapy.all import IP, TCP, UDP, wrpcap

    ether = folder / "ether.pcap"
    subprocess.run(["editcap", "-r", str(shared_data / "pcaps/zoom/zoom.pcap"), str(ether), "1-20"], check=True,
                   capture_output=True)
    raw = folder / "raw.pcap"
    wrpcap(str(raw), [IP(src="10.0.0.1", dst="10.0.0.2", id=i, ttl=60) / TCP(sport=40000, dport=443, seq=i * 100,
                                                                              flags="A", window=500) / (b"x" * 100)
                      for i in range(6)] + [IP(src="10.0.0.3", dst="10.0.0.4") / UDP(sport=53, dport=5353) / b"q"],
           linktype=101)
    merged = folder / "two_link_types.pcapng"
    subprocess.run(["mergecap", "-a", "-F", "pcapng", "-w", str(merged), str(ether), str(raw)], check=True,
                   capture_output=True)
    return merged


def test_the_check_runs_on_a_pcapng_of_several_link_types(shared_data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """pcap cannot hold two link types: cutting frames to pcap made editcap exit 2 and the whole
    check crash (Wireshark's grpc_stream_reassembly_sample.pcapng.gz). An empty capture is
    reported as rejected, and the check still passes."""
    merged = _two_link_type_capture(shared_data, tmp_path)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    assert main([str(merged), str(empty)]) == 0
    results = json.loads(capsys.readouterr().out)
    # the 19 IP packets of zoom.pcap's first 20 frames (one is not IP) and the 7 raw ones
    assert results[str(merged)]["compared"] == 26 and results[str(merged)]["mismatches"] == 0
    assert results[str(empty)]["rejected"] == "no packets"


def test_an_icmp_error_quoting_an_echo_request_is_compared_by_its_own_fields(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The checker took the quoted echo request's ident for the error's rest-of-header (tcpdump's
    dhcp-rfc4388.pcap: 3 false mismatches); the error's own unused field is what nPrint holds."""
    from scapy.all import ICMP, IP, Ether, wrpcap

    quoted = IP(src="10.40.2.3", dst="10.30.4.4") / ICMP(type=8, id=0x4024, seq=7)
    wrpcap(str(tmp_path / "err.pcap"), [Ether() / IP(src="10.40.1.1", dst="10.40.2.3") / ICMP(type=3, code=1) / quoted,
                                        Ether() / IP(src="10.40.2.3", dst="10.30.4.4") / ICMP(type=8, id=9, seq=1)])
    assert main([str(tmp_path / "err.pcap")]) == 0
    assert json.loads(capsys.readouterr().out)[str(tmp_path / "err.pcap")]["compared"] == 2


def test_frames_shown_by_a_display_filter_match_frames_cut_out(shared_data: Path, tmp_path: Path) -> None:
    """The fallback for captures editcap cannot cut (tshark reads the whole file and shows the
    sampled frames) gives the same fields, frame for frame, as dissecting the frames cut out."""
    capture = shared_data / "pcaps/zoom/zoom.pcap"
    frames = [1, 2, 5, 17, 40]
    cut = _tshark_fields(_cut_frames(capture, frames, tmp_path))
    shown = _tshark_fields(capture, "frame.number in {" + ",".join(map(str, frames)) + "}")
    assert len(cut) == len(frames) and cut == shown


def main(argv: list[str]) -> int:
    """Check captures given on the command line (e.g. ones this suite has never seen).

    Prints one JSON record per capture. Exit status 1 when any field disagrees or a capture could
    not be checked (tshark / editcap failed: the record says why); a capture the encoder rejects
    (empty, not a capture) or that holds no packet it keeps is reported, with its reason, and does
    not fail the check: there is nothing to disagree with."""
    from netdiffusion.encode import encode_paths

    with tempfile.TemporaryDirectory() as d:
        results: dict[str, dict] = {}
        for capture in argv:
            out = Path(d) / Path(capture).name
            summary = encode_paths([capture], out, windows=True, progress=False)
            if summary["files_rejected"]:
                results[capture] = {"compared": 0, "mismatches": 0, "rejected": summary["files_rejected"][0]["reason"]}
                continue
            layout = read_layout(out)
            shards = list(iter_shards(out))
            if not shards:  # read, but no packet the encoder keeps (e.g. no IP at all)
                results[capture] = {"compared": 0, "mismatches": 0, "examples": [], "skipped": summary["skipped"]}
                continue
            rows = Packets.concat(shards)
            try:
                n, problems = compare_capture(Path(capture), rows, layout)
            except (subprocess.CalledProcessError, OSError, ValueError) as e:  # the run carries on
                stderr = getattr(e, "stderr", None)
                reason = (stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or str(e)).strip()
                results[capture] = {"compared": 0, "mismatches": 0, "error": reason.splitlines()[-1] if reason else repr(e)}
                continue
            results[capture] = {"compared": n, "mismatches": len(problems), "examples": problems[:5]}
        print(json.dumps(results, indent=2))
    failed = [c for c, r in results.items() if r["mismatches"] or "error" in r]
    print(f"{len(results)} captures, {sum(r['compared'] for r in results.values())} packets compared, "
          f"{sum(r['mismatches'] for r in results.values())} mismatches, "
          f"{sum('error' in r for r in results.values())} not checked (error), "
          f"{sum('rejected' in r for r in results.values())} rejected by the encoder", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def test_fields_agree_with_tshark_on_a_varied_unseen_capture(tmp_path: Path) -> None:
    """Headers the shared data barely has (IPv4 options, ICMP errors quoting inner headers,
    timestamp queries, every TCP flag incl. NS and reserved bits, VLAN, IPv6 UDP), written as
    pcapng by scapy's own writer."""
    import warnings

    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    from scapy.utils import wrpcapng

    from netdiffusion.encode import encode_paths

    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    inner = IP(src="10.9.9.9", dst="10.8.8.8") / UDP(sport=5000, dport=53)
    pkts = [
        e / IP(src="10.0.0.1", dst="10.0.0.2", tos=0xB8, id=4242, ttl=3, flags="DF",
               options=[IPOption_RR(routers=["1.2.3.4"])]) / TCP(sport=1, dport=2, flags="SEC", reserved=5,
                                                                  seq=2**32 - 5, ack=77, window=1, urgptr=9,
                                                                  options=[("MSS", 1), ("SAckOK", b""),
                                                                           ("Timestamp", (1, 2)), ("WScale", 14)]),
        e / IP(src="10.0.0.2", dst="10.0.0.1") / TCP(sport=2, dport=1, flags=0x1FF),
        e / Dot1Q(vlan=7) / IP(src="10.0.0.3", dst="10.0.0.4", flags="MF") / UDP(sport=9, dport=10) / (b"q" * 30),
        e / IP(src="10.0.0.5", dst="10.0.0.6") / ICMP(type=8, id=300, seq=7) / b"ping",
        e / IP(src="10.0.0.6", dst="10.0.0.5") / ICMP(type=0, id=300, seq=7) / b"ping",
        e / IP(src="10.0.0.7", dst="10.9.9.9") / ICMP(type=3, code=3) / inner,
        e / IP(src="10.0.0.7", dst="10.9.9.9") / ICMP(type=11, code=0) / inner,
        e / IP(src="10.0.0.5", dst="10.0.0.6") / ICMP(type=13, id=5, seq=6, ts_ori=1, ts_rx=2, ts_tx=3),
        e / IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0x2E, fl=0xBEEF, hlim=1) / UDP(sport=53, dport=5353) / b"z",
        e / IPv6(src="2001:db8::2", dst="2001:db8::1") / TCP(sport=443, dport=50000, flags="PA") / b"data",
    ]
    capture = tmp_path / "varied.pcapng"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrpcapng(str(capture), pkts)
    out = tmp_path / "ds"
    summary = encode_paths([capture], out, windows=True, progress=False)
    assert summary["packets"] == len(pkts) and not summary["files_rejected"]
    layout = read_layout(out)
    rows = Packets.concat(list(iter_shards(out)))
    rows = rows.take(np.argsort(rows.frame))
    problems = compare_rows(layout, rows, tshark_rows(capture, rows.frame.tolist()))
    assert not problems, problems[:5]
    assert (layout.field_values(rows.nprint, "ipv4_hl") > 5).sum() == 1
