"""Validate pcaps with the standard tools: tshark, capinfos, tcpreplay and scapy.

For every ``*.pcap`` under a directory (one flow per file, as repair writes them):

- **tshark** with IP/TCP/UDP checksum validation on: malformed packets, bad checksums, expert
  info counts by severity, and TCP analysis flags (lost / unseen-ACKed / out-of-order segments,
  reused ports, retransmissions, duplicate ACKs, ...). Files of one conversation each are read in
  batches, one tshark per batch (:func:`batch_files`); batches run concurrently.
- **capinfos** summary per file (packets, duration, sizes, rates, time order: the paper's Table 9).
- **tcpreplay** of every file onto one end of a veth pair inside a network namespace created for
  this run and always removed afterwards (needs root; skipped with a clear message otherwise);
  runs of files per tcpreplay, each file alone where a run does not send everything.
- **scapy** reads every file and must see as many packets as capinfos.

A file *fails* when any count exceeds its threshold (:data:`DEFAULT_THRESHOLDS`, all zero); a
file with no packet at all fails the ``empty`` check (it would otherwise pass every other one).
"TCP errors" are the analysis flags that cannot happen in a complete, well-formed capture:
``lost_segment``, ``ack_lost_segment``, ``out_of_order`` and ``reused_ports`` on a connection
that was not closed; retransmissions, duplicate ACKs, window and keep-alive notes, and a new
connection on the ports of one both sides closed with a FIN or one side reset
(``reused_ports_after_close``: clients do reuse ports) are legitimate TCP behaviour and only
reported.
"""

from __future__ import annotations

import bisect
import functools
import gzip
import itertools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from netdiffusion.labels import CAPTURE_SUFFIXES
from netdiffusion.pcap.reader import PCAP_MAGICS, CaptureError, capture_format

log = logging.getLogger(__name__)

TSHARK_PREFS = ("ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE",
                "tcp.analyze_sequence_numbers:TRUE")
# Payload bytes are synthetic (nPrint holds headers only), so dissectors that parse application
# payloads would call zero/random bytes malformed; they are turned off, headers are fully checked.
# These always; plus every dissector this tshark selects by TCP/UDP port or heuristic
# (:func:`payload_protocols`), so a flow on, say, UDP 521 is not judged as RIPng.
PAYLOAD_PROTOCOLS = ("dhcp", "dns", "mdns", "llmnr", "nbns", "nbdgm", "ssdp", "tls", "dtls", "http", "quic",
                     "gquic", "stun", "classicstun", "rtp", "rtcp", "ntp", "snmp", "smb", "browser",
                     "cldap", "sip", "xml")
# never turned off: the headers we validate (a tunnel registered on a port must not take them)
HEADER_PROTOCOLS = frozenset({"frame", "eth", "ethertype", "vlan", "sll", "ip", "ipv6", "tcp", "udp", "icmp",
                              "icmpv6", "data"})
# Wireshark expert severities and groups (epan/proto.h)
SEVERITY = {0x00200000: "chat", 0x00400000: "note", 0x00600000: "warning", 0x00800000: "error",
            0x00100000: "comment"}
GROUP_CHECKSUM = 0x01000000
GROUP_MALFORMED = 0x07000000
# expert message prefix -> TCP analysis flag
TCP_FLAG_MESSAGES = {
    "Previous segment(s) not captured": "lost_segment",
    "ACKed segment that wasn't captured": "ack_lost_segment",
    "This frame is a (suspected) out-of-order segment": "out_of_order",
    "A new tcp session is started with the same ports": "reused_ports",
    "This frame is a (suspected) spurious retransmission": "spurious_retransmission",
    "This frame is a (suspected) fast retransmission": "fast_retransmission",
    "This frame is a (suspected) retransmission": "retransmission",
    "Duplicate ACK": "duplicate_ack",
    "TCP window specified by the receiver is now completely full": "window_full",
    "TCP Zero Window Probe": "zero_window_probe",
    "TCP Zero Window segment": "zero_window",
    "TCP Zero Window": "zero_window",
    "TCP window update": "window_update",
    "TCP keep-alive segment": "keep_alive",
    "ACK to a TCP keep-alive segment": "keep_alive_ack",
}
TCP_ERROR_FLAGS = ("lost_segment", "ack_lost_segment", "out_of_order", "reused_ports")
# per frame, after the expert columns: what tells a port reuse after a close from one mid-connection
CLOSE_FIELDS = ("ip.src", "ipv6.src", "ip.dst", "ipv6.dst", "tcp.srcport", "tcp.dstport", "tcp.flags.fin",
                "tcp.flags.reset")
DEFAULT_THRESHOLDS: dict[str, int] = {
    "malformed": 0, "bad_checksums": 0, "expert_errors": 0, "tcp_errors": 0,
    "tcpreplay_failed": 0, "tcpreplay_unsent": 0, "scapy_errors": 0,
    "empty": 0,  # 1 for a file with no packet: a flow was asked for and nothing came out
}


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@functools.lru_cache(maxsize=1)
def payload_protocols() -> tuple[str, ...]:
    """:data:`PAYLOAD_PROTOCOLS` and every protocol tshark dissects TCP/UDP payloads with, by port
    (``tshark -G decodes``) or heuristic (``-G heuristic-decodes``). Asked once per process."""
    found = set(PAYLOAD_PROTOCOLS)
    for table, column, keys in (("decodes", 2, ("tcp.port", "udp.port")), ("heuristic-decodes", 1, ("tcp", "udp"))):
        try:
            proc = _run(["tshark", "-G", table])
        except (OSError, subprocess.SubprocessError):
            break  # no tshark: tshark_file reports that per file
        if proc.returncode != 0:
            log.warning("tshark -G %s failed; payload dissectors off: the fixed list only", table)
            continue
        for line in proc.stdout.splitlines():
            cols = line.split("\t")
            if len(cols) > column and cols[0] in keys:
                found.add(cols[column])
    return tuple(sorted(found - HEADER_PROTOCOLS))


def tshark_command(source: str) -> list[str]:
    cmd = ["tshark", "-n", "-r", source]
    for pref in TSHARK_PREFS:
        cmd += ["-o", pref]
    for proto in payload_protocols():
        cmd += ["--disable-protocol", proto]
    return cmd + ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=\x1f", "-E", "separator=\t",
                  "-e", "frame.number", "-e", "_ws.malformed", "-e", "_ws.expert.severity",
                  "-e", "_ws.expert.group", "-e", "_ws.expert.message",
                  *(x for f in CLOSE_FIELDS for x in ("-e", f))]


def empty_counts() -> dict:
    return {"packets": 0, "malformed": 0, "bad_checksums": 0, "expert": Counter(), "tcp_flags": Counter(),
            "expert_error_messages": Counter(), "_closing": {}}


def _last(value: str) -> str:
    """The innermost of a field's occurrences (a tunnelled packet lists the outer header's first)."""
    return value.rsplit("\x1f", 1)[-1]


def _closed_before(out: dict, cols: list[str]) -> tuple[bool, tuple] | None:
    """Track how each TCP connection of the file closes (per address:port pair, both directions);
    returns, for this frame, whether its connection was closed before it (both sides sent a FIN,
    or one an RST) and the pair, or None for a frame that is not TCP. Columns after the expert
    ones: CLOSE_FIELDS."""
    if len(cols) < 5 + len(CLOSE_FIELDS):
        return None
    src4, src6, dst4, dst6, sport, dport, fin, rst = (_last(c) for c in cols[5 : 5 + len(CLOSE_FIELDS)])
    if not sport:
        return None
    here, there = (src4 or src6, sport), (dst4 or dst6, dport)
    key = (here, there) if here <= there else (there, here)
    fins, reset = out["_closing"].get(key, (frozenset(), False))
    closed = len(fins) == 2 or reset
    if fin in ("1", "True"):
        fins = fins | {here}
    out["_closing"][key] = (fins, reset or rst in ("1", "True"))
    return closed, key


def count_line(out: dict, cols: list[str]) -> None:
    """Add one tshark output line (one frame: number, malformed, severities, groups, messages)."""
    if len(cols) < 5 + len(CLOSE_FIELDS):
        cols += [""] * (5 + len(CLOSE_FIELDS) - len(cols))
    out["packets"] += 1
    sev = [int(s) for s in cols[2].split("\x1f") if s]
    grp = [int(g) for g in cols[3].split("\x1f") if g]
    msgs = [m for m in cols[4].split("\x1f") if m] if cols[4] else []
    malformed = bool(cols[1]) or GROUP_MALFORMED in grp
    closing = _closed_before(out, cols)
    out["malformed"] += int(malformed)
    for i, s in enumerate(sev):
        name = SEVERITY.get(s, str(s))
        out["expert"][name] += 1
        g = grp[i] if i < len(grp) else 0
        msg = msgs[i] if i < len(msgs) else ""
        if g == GROUP_CHECKSUM and name == "error":
            out["bad_checksums"] += 1
        if name == "error":
            out["expert_error_messages"][re.sub(r"\[.*?\]|0x[0-9a-f]+|\d+", "#", msg)[:80]] += 1
        for prefix, flag in TCP_FLAG_MESSAGES.items():
            if msg.startswith(prefix):
                if flag == "reused_ports" and closing is not None:
                    out["_closing"][closing[1]] = (frozenset(), False)  # a new connection starts
                    if closing[0]:
                        flag = "reused_ports_after_close"
                out["tcp_flags"][flag] += 1
                break


def _finish_counts(out: dict) -> dict:
    out.pop("_closing", None)
    out["expert_errors"] = out["expert"].get("error", 0)
    out["tcp_errors"] = sum(out["tcp_flags"].get(f, 0) for f in TCP_ERROR_FLAGS)
    return out


def tshark_file(path: Path) -> dict:
    """Expert/analysis counts of one capture."""
    proc = _run(tshark_command(str(path)))
    out = empty_counts()
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["tshark failed"])[-1]
        return out
    for line in proc.stdout.splitlines():
        count_line(out, line.split("\t"))
    return _finish_counts(out)


# One tshark process costs ~0.1-0.2 s to start (it loads every dissector) however few packets it
# reads, and repair writes one flow of tens of packets per file: per-file tshark spent most of its
# time starting. Files that each hold one conversation of a classic pcap are therefore read in
# batches: their records concatenated behind one header and piped to one tshark, whose per-frame
# lines are split back by frame number. Files in a batch never share a conversation (TCP/UDP:
# protocol + both address:port ends; ICMP: protocol + addresses), so tshark's per-conversation
# analysis sees each file's packets as if alone. Anything else (pcapng, gzip, several
# conversations, fragments, packets encode would skip) is read alone, as before.
BATCH_FILES = 256
BATCH_PACKETS = 20_000


@dataclass(frozen=True)
class _Probe:
    """What batching needs of one file: its pcap header (snaplen zeroed; batches use the largest),
    its one conversation and its records, or ``header=None`` when it must be read alone."""

    header: bytes | None
    conversation: tuple = ()
    records: int = 0
    snaplen: int = 0


_ALONE = _Probe(None)


def _byte_order(header: bytes | bytearray) -> str:
    """The byte order of a classic pcap's header fields, from its magic (the reader's table)."""
    return "little" if PCAP_MAGICS[bytes(header[:4])][0] == "<" else "big"


def _probe(path: Path) -> _Probe:
    import numpy as np

    from netdiffusion.pcap.parse import L3_IPV4, L4_ICMP, L4_NONE, parse_batch
    from netdiffusion.pcap.reader import iter_records

    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
        if len(head) < 24 or head[:4] not in PCAP_MAGICS:
            return _ALONE
        records, key = 0, None
        for batch in iter_records(path):
            parsed = parse_batch(batch)
            mf = (parsed.l3 == L3_IPV4) & ((parsed.l3_bytes[:, 6] & 0x20) != 0)
            if (parsed.reason >= 0).any() or (parsed.l4 == L4_NONE).any() or mf.any():
                return _ALONE
            icmp = parsed.l4 == L4_ICMP
            a = np.column_stack([parsed.src_words.astype(np.int64), np.where(icmp, 0, parsed.sport)])
            b = np.column_stack([parsed.dst_words.astype(np.int64), np.where(icmp, 0, parsed.dport)])
            if key is None:
                ends = sorted([tuple(int(v) for v in a[0]), tuple(int(v) for v in b[0])])
                key = (int(parsed.proto[0]), *ends[0], *ends[1])
            lo, hi, proto = np.array(key[1:4]), np.array(key[4:7]), key[0]
            same = ((a == lo).all(axis=1) & (b == hi).all(axis=1)) | ((a == hi).all(axis=1) & (b == lo).all(axis=1))
            if not (same.all() and (parsed.proto == proto).all()):
                return _ALONE
            records += len(batch)
    except (OSError, CaptureError):
        return _ALONE
    if key is None:
        return _ALONE
    snaplen = int.from_bytes(head[16:20], _byte_order(head))
    return _Probe(head[:16] + b"\0\0\0\0" + head[20:], key, records, snaplen)


def batch_files(probes: list[_Probe], max_files: int = BATCH_FILES, max_packets: int = BATCH_PACKETS
                ) -> list[list[int]]:
    """Indices of ``probes`` grouped for one tshark each: same pcap header, distinct conversations,
    at most ``max_files`` files and (unless one file alone is larger) ``max_packets`` records."""
    batches: list[list[int]] = []
    open_batches: dict[bytes, list[tuple[list[int], set, list[int]]]] = {}
    for i, pr in enumerate(probes):
        if pr.header is None:
            batches.append([i])
            continue
        for members, keys, size in open_batches.setdefault(pr.header, []):
            if (pr.conversation not in keys and len(members) < max_files
                    and size[0] + pr.records <= max_packets):
                break
        else:
            members, keys, size = [], set(), [0]
            open_batches[pr.header].append((members, keys, size))
            batches.append(members)
        members.append(i)
        keys.add(pr.conversation)
        size[0] += pr.records
    return batches


def _chunks(packets: list[int], max_files: int = BATCH_FILES, max_packets: int = BATCH_PACKETS) -> list[range]:
    """Consecutive runs of files (by their packet counts) of at most ``max_files`` files and
    ``max_packets`` packets (a larger file is a run of its own)."""
    runs, start, size = [], 0, 0
    for i, n in enumerate(packets):
        if i > start and (i - start >= max_files or size + n > max_packets):
            runs.append(range(start, i))
            start, size = i, 0
        size += n
    if start < len(packets):
        runs.append(range(start, len(packets)))
    return runs


def tshark_batch(paths: list[Path], probes: list[_Probe]) -> list[dict]:
    """:func:`tshark_file` of each of ``paths`` (one batch of :func:`batch_files`) with one tshark.

    Should the batch's tshark fail or report another number of frames than the files hold, each
    file is read alone instead (its own error then names it)."""
    if len(paths) == 1:
        return [tshark_file(paths[0])]
    snaplen = max(pr.snaplen for pr in probes)
    header = bytearray(probes[0].header or b"")
    header[16:20] = snaplen.to_bytes(4, _byte_order(header))
    chunks = [bytes(header)]
    for path in paths:
        with open(path, "rb") as fh:
            fh.seek(24)
            chunks.append(fh.read())
    proc = subprocess.run(tshark_command("-"), input=b"".join(chunks), capture_output=True, timeout=600,
                          check=False)
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    if proc.returncode != 0 or len(lines) != sum(pr.records for pr in probes):
        log.info("batched tshark of %d files (%s ...) did not read them whole; reading each alone",
                 len(paths), paths[0])
        return [tshark_file(p) for p in paths]
    outs = [empty_counts() for _ in paths]
    bounds = list(itertools.accumulate(pr.records for pr in probes))
    for line in lines:
        cols = line.split("\t")
        frame = int(cols[0])
        count_line(outs[bisect.bisect_left(bounds, frame)], cols)
    return [_finish_counts(out) for out in outs]


def capinfos(paths: list[Path]) -> dict[str, dict]:
    """capinfos table rows keyed by file path (batched: one process per 200 files)."""
    rows: dict[str, dict] = {}
    for i in range(0, len(paths), 200):
        batch = [str(p) for p in paths[i:i + 200]]
        proc = _run(["capinfos", "-T", "-M", *batch])
        lines = proc.stdout.splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        for line in lines[1:]:
            values = line.split("\t")
            rec = dict(zip(header, values, strict=False))
            name = rec.pop("File name", None)
            if name:
                rows[name] = rec
    return rows


def scapy_count(path: Path) -> tuple[int, str | None]:
    """Packets scapy reads from a file (and the error, if it cannot)."""
    try:
        import scapy.layers.inet  # noqa: F401  (registers Ethernet/IP so frames are dissected)
        import scapy.layers.inet6  # noqa: F401
        import scapy.layers.l2  # noqa: F401
        from scapy.utils import PcapReader

        n = 0
        with PcapReader(str(path)) as reader:
            for _ in reader:
                n += 1
        return n, None
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return 0, f"{type(exc).__name__}: {exc}"


class ReplayNamespace:
    """A network namespace with a veth pair, offloads off, removed on exit."""

    def __init__(self, mtu: int = 65535) -> None:
        self.name = f"ndval-{uuid.uuid4().hex[:10]}"
        self.mtu = mtu
        self.iface = "ndv0"

    def _ns(self, *cmd: str) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.name, *cmd])

    def __enter__(self) -> ReplayNamespace:
        proc = _run(["ip", "netns", "add", self.name])
        if proc.returncode != 0:
            raise RuntimeError(f"cannot create network namespace: {proc.stderr.strip()}")
        try:
            steps = [["ip", "link", "add", self.iface, "type", "veth", "peer", "name", "ndv1"]]
            for dev in (self.iface, "ndv1"):
                steps.append(["ip", "link", "set", dev, "mtu", str(self.mtu)])
                steps.append(["ip", "link", "set", dev, "up"])
            for step in steps:
                p = self._ns(*step)
                if p.returncode != 0 and "mtu" not in step:
                    raise RuntimeError(f"{' '.join(step)}: {p.stderr.strip()}")
            if shutil.which("ethtool"):
                self._ns("ethtool", "-K", self.iface, "tx", "off", "rx", "off", "gso", "off", "tso", "off",
                         "gro", "off")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _run(["ip", "netns", "del", self.name])

    def replay_many(self, paths: list[Path], packets: list[int]) -> list[dict]:
        """:meth:`replay` of each of ``paths`` with one tcpreplay (it sends files one after the other
        and counts them together): when it sends every packet of every file, each file sent all of
        its ``packets``; any failure, truncation or shortfall and each file is replayed alone, so the
        report names the file it came from."""
        if len(paths) > 1:
            both = self._replay_counts([str(p) for p in paths])
            if not both["rc"] and not both["failed"] and not both["truncated"] and both["sent"] == sum(packets):
                return [{"sent": n, "failed": 0, "truncated": 0, "rc": 0} for n in packets]
        out = [self.replay(p) for p in paths]
        for rec, n in zip(out, packets, strict=True):
            if n and not rec["sent"] and "error" not in rec:
                # libpcap skipping what it cannot read (e.g. a pcapng whose interfaces differ in
                # link type, which no pcap can hold either): tcpreplay says nothing and exits 0
                rec["error"] = f"sent none of {n} packets and gave no reason"
        return out

    def replay(self, path: Path) -> dict:
        return self._replay_counts([str(path)])

    def _replay_counts(self, paths: list[str]) -> dict:
        # gzip and pcapng go through a copy tcpreplay reads (:func:`_replayable`; Wireshark's own
        # test captures: 56 of 119 files "unsent" for that alone)
        with tempfile.TemporaryDirectory(prefix="netdiffusion-replay-") as tmp:
            readable = [_replayable(Path(p), Path(tmp), str(i)) for i, p in enumerate(paths)]
            proc = self._ns("tcpreplay", "-q", "-t", "-i", self.iface, *readable)
        text = proc.stdout + proc.stderr

        def num(pattern: str) -> int:
            m = re.search(pattern, text)
            return int(m.group(1)) if m else 0

        out = {"sent": num(r"Successful packets:\s+(\d+)"), "failed": num(r"Failed packets:\s+(\d+)"),
               "truncated": num(r"Truncated packets:\s+(\d+)"), "rc": proc.returncode}
        if "Successful packets:" not in text:
            # when no packet could be sent tcpreplay prints no statistics (and exits 0): its warnings
            # ("Unable to send packet: ...") are the failures
            out["failed"] = len(re.findall(r"Unable to send packet", text))
        if text.strip() and (proc.returncode or "Successful packets:" not in text):
            out["error"] = next((line.strip() for line in reversed(text.strip().splitlines())
                                 if not line.startswith(("Warning", "\t"))), text.strip().splitlines()[-1])
        return out


def _replayable(path: Path, folder: Path, stem: str) -> str:
    """``path``, or a copy in ``folder`` that tcpreplay can read: tcpreplay reads no gzip
    ("unknown file format"; tshark, capinfos, scapy and encode all do) and sends nothing, silently,
    from a pcapng of several interfaces (Wireshark's quic-fragmented-handshakes.pcapng.gz). A
    compressed capture is decompressed and a pcapng converted to pcap (editcap); where either
    fails the file stays as it is, and tcpreplay's own result names it."""
    try:
        kind = capture_format(path)
        if kind.endswith("+gzip"):
            plain = folder / f"{stem}.raw"
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path = plain
    except (OSError, EOFError, CaptureError):
        return str(path)
    if kind.startswith("pcapng") and shutil.which("editcap"):
        converted = folder / f"{stem}.pcap"
        if _run(["editcap", "-F", "pcap", str(path), str(converted)]).returncode == 0:
            return str(converted)
    return str(path)


def can_replay() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "tcpreplay skipped: needs root to create a network namespace"
    missing = [t for t in ("ip", "tcpreplay") if not shutil.which(t)]
    if missing:
        return False, f"tcpreplay skipped: {', '.join(missing)} not installed"
    return True, ""


def capture_files(root: Path) -> list[Path]:
    """``root`` itself, or every capture under it as encode finds them (``*.pcap`` as repair and
    decode write them, and ``*.pcapng``, ``*.cap``, ...: one left out would pass unseen)."""
    from netdiffusion.encode import discover_inputs

    return [path for path, _, _ in discover_inputs([root])]


def other_captures(folder: Path, written: set[str] | set[Path], writer: str) -> int:
    """How many captures under ``folder`` ``writer`` did not write (an earlier run's?), with a warning:
    ``validate`` of the folder reads them too, while the writer's summary counts only its own.

    ``written``: the paths as written (``folder`` joined with names below it), strings or paths."""
    names = {os.fspath(p) for p in written}
    others = sum(1 for path in capture_files(folder) if os.fspath(path) not in names)
    if others:
        log.warning("%s: %d capture file(s) there were not written by this %s (an earlier run's?)",
                    folder, others, writer)
    return others


def validate_dir(input: str | os.PathLike, report: str | os.PathLike | None = None, *,
                 tcpreplay: bool | None = None, thresholds: dict[str, int] | None = None,
                 workers: int | None = None, progress: bool | None = None) -> dict:
    """Validate every capture under ``input`` (recursively, :func:`capture_files`); optionally write
    ``report`` JSON.

    ``tcpreplay=None`` replays when possible (root), ``True`` requires it, ``False`` skips it.
    Returns the report: ``files`` (per file), ``totals`` and ``failed`` (files over threshold)."""
    from tqdm import tqdm

    from netdiffusion.dataset import write_json

    started = time.perf_counter()
    root = Path(input)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    files = capture_files(root)
    if not files:
        raise FileNotFoundError(f"{root}: no *.pcap files (nor {', '.join(CAPTURE_SUFFIXES[1:])})")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    workers = workers or max(1, os.cpu_count() or 1)
    replay_ok, replay_reason = can_replay()
    if tcpreplay is True and not replay_ok:
        raise RuntimeError(replay_reason)
    do_replay = replay_ok and tcpreplay is not False
    if not do_replay:
        replay_reason = replay_reason or "tcpreplay skipped: disabled"
        log.warning(replay_reason)
    bar = dict(disable=None if progress is None else not progress, unit="file")
    tshark: list[dict] = [{}] * len(files)
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(files), desc="tshark", **bar) as shown:
        probes = list(pool.map(_probe, files))
        batches = batch_files(probes)

        def run_batch(batch: list[int]) -> None:
            for i, counts in zip(batch, tshark_batch([files[i] for i in batch], [probes[i] for i in batch]),
                                 strict=True):
                tshark[i] = counts
            shown.update(len(batch))

        list(pool.map(run_batch, batches))
    caps = capinfos(files)
    scapy = [scapy_count(f) for f in tqdm(files, desc="scapy", **bar)]
    # packets per file: capinfos' count, else tshark's
    counts = [int(caps.get(str(f), {}).get("Number of packets", ts["packets"]) or 0)
              for f, ts in zip(files, tshark, strict=True)]
    replays: list[dict | None] = [None] * len(files)
    if do_replay:
        chunks = _chunks(counts)
        with (ReplayNamespace() as ns, ThreadPoolExecutor(min(workers, 4)) as pool,
              tqdm(total=len(files), desc="tcpreplay", **bar) as shown):

            def replay_chunk(chunk: range) -> None:
                replays[chunk.start:chunk.stop] = ns.replay_many(files[chunk.start:chunk.stop],
                                                                 counts[chunk.start:chunk.stop])
                shown.update(len(chunk))

            list(pool.map(replay_chunk, chunks))
    per_file = []
    totals: Counter[str] = Counter()
    flags_total: Counter[str] = Counter()
    expert_total: Counter[str] = Counter()
    error_messages: Counter[str] = Counter()
    failed = []
    for f, ts, packets, (scount, serr), rp in zip(files, tshark, counts, scapy, replays, strict=True):
        cap = caps.get(str(f), {})
        rec = {"file": str(f.relative_to(root)) if root.is_dir() else f.name, "packets": packets,
               "malformed": ts["malformed"], "bad_checksums": ts["bad_checksums"],
               "expert_errors": ts.get("expert_errors", 0), "tcp_errors": ts.get("tcp_errors", 0),
               "expert": dict(ts["expert"]), "tcp_flags": dict(ts["tcp_flags"]),
               "scapy_packets": scount, "capinfos": cap}
        if ts.get("error"):
            rec["tshark_error"] = ts["error"]
            rec["malformed"] += 1
        rec["empty"] = int(packets == 0 and scount == 0)
        rec["scapy_errors"] = int(serr is not None or scount != packets)
        if serr:
            rec["scapy_error"] = serr
        if rp is not None:
            rec["tcpreplay"] = rp
            rec["tcpreplay_failed"] = rp["failed"] + rp["truncated"]
            rec["tcpreplay_unsent"] = max(packets - rp["sent"], 0)
        over = [k for k, lim in limits.items() if rec.get(k, 0) > lim]
        rec["ok"] = not over
        if over:
            rec["failed_checks"] = over
            failed.append(rec["file"])
        for k in ("packets", "malformed", "bad_checksums", "expert_errors", "tcp_errors", "scapy_errors",
                  "tcpreplay_failed", "tcpreplay_unsent", "empty"):
            totals[k] += rec.get(k, 0)
        if rp is not None:
            totals["tcpreplay_sent"] += rp["sent"]
        flags_total.update(ts["tcp_flags"])
        expert_total.update(ts["expert"])
        error_messages.update(ts["expert_error_messages"])
        per_file.append(rec)
    seconds = time.perf_counter() - started
    summary = {
        "files": len(files), "files_ok": len(files) - len(failed), "files_failed": len(failed),
        **dict(totals), "expert": dict(expert_total), "tcp_flags": dict(flags_total),
        "expert_error_messages": dict(error_messages.most_common(20)),
        "tcpreplay": "done" if do_replay else replay_reason, "thresholds": limits,
        "seconds": round(seconds, 3),
        "seconds_per_1000_packets": round(1000 * seconds / max(totals["packets"], 1), 4),
    }
    out = {"input": str(root), "totals": summary, "failed": failed, "files": per_file}
    if report is not None:
        write_json(report, out)
    return out


def summary_text(result: dict) -> str:
    """A short human summary of a validation report."""
    t = result["totals"]
    lines = [
        f"{t['files']} files, {t.get('packets', 0)} packets: {t['files_ok']} ok, {t['files_failed']} failed",
        f"malformed {t.get('malformed', 0)}, bad checksums {t.get('bad_checksums', 0)}, "
        f"expert errors {t.get('expert_errors', 0)}, TCP errors {t.get('tcp_errors', 0)}, "
        f"scapy errors {t.get('scapy_errors', 0)}, empty {t.get('empty', 0)}",
        f"expert by severity: {t.get('expert', {})}",
        f"TCP analysis flags: {t.get('tcp_flags', {})}",
        (f"tcpreplay: sent {t.get('tcpreplay_sent', 0)}, failed {t.get('tcpreplay_failed', 0)}, "
         f"unsent {t.get('tcpreplay_unsent', 0)}" if t["tcpreplay"] == "done" else t["tcpreplay"]),
        f"{t['seconds']} s ({t['seconds_per_1000_packets']} s per 1,000 packets)",
    ]
    if result["failed"]:
        records = {r.get("file"): r for r in result.get("files", [])}
        lines.append("failed:")
        lines += [f"  {name}: {_failure_reason(records.get(name, {}))}" for name in result["failed"][:10]]
        if len(result["failed"]) > 10:
            lines.append(f"  ... and {len(result['failed']) - 10} more (the report's \"failed\" list)")
    return "\n".join(lines)


def _failure_reason(record: dict) -> str:
    """Which checks a file failed and the tools' own words, so the summary says why, not only which."""
    checks = ", ".join(record.get("failed_checks") or []) or "failed"
    words = [f"{tool}: {text.splitlines()[0].strip().removeprefix(tool + ': ')}" for tool, text in (
        ("tshark", record.get("tshark_error")), ("scapy", record.get("scapy_error")),
        ("tcpreplay", (record.get("tcpreplay") or {}).get("error"))) if text]
    return f"{checks} ({'; '.join(words)})" if words else checks
