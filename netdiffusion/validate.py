"""Validate pcaps with the standard tools: tshark, capinfos, tcpreplay and scapy.

For every ``*.pcap`` under a directory (one flow per file, as repair writes them):

- **tshark** with IP/TCP/UDP checksum validation on: malformed packets, bad checksums, expert
  info counts by severity, and TCP analysis flags (lost / unseen-ACKed / out-of-order segments,
  reused ports, retransmissions, duplicate ACKs, ...). One tshark process per file, run
  concurrently.
- **capinfos** summary per file (packets, duration, sizes, rates, time order: the paper's Table 9).
- **tcpreplay** of every file onto one end of a veth pair inside a network namespace created for
  this run and always removed afterwards (needs root; skipped with a clear message otherwise).
- **scapy** reads every file and must see as many packets as capinfos.

A file *fails* when any count exceeds its threshold (:data:`DEFAULT_THRESHOLDS`, all zero); a
file with no packet at all fails the ``empty`` check (it would otherwise pass every other one).
"TCP errors" are the analysis flags that cannot happen in a complete, well-formed capture:
``lost_segment``, ``ack_lost_segment``, ``out_of_order`` and ``reused_ports``; retransmissions,
duplicate ACKs, window and keep-alive notes are legitimate TCP behaviour and only reported.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from netdiffusion.labels import CAPTURE_SUFFIXES

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


def tshark_file(path: Path) -> dict:
    """Expert/analysis counts of one capture."""
    cmd = ["tshark", "-n", "-r", str(path)]
    for pref in TSHARK_PREFS:
        cmd += ["-o", pref]
    for proto in payload_protocols():
        cmd += ["--disable-protocol", proto]
    cmd += ["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=\x1f", "-E", "separator=\t",
            "-e", "frame.number", "-e", "_ws.malformed", "-e", "_ws.expert.severity",
            "-e", "_ws.expert.group", "-e", "_ws.expert.message"]
    proc = _run(cmd)
    out: dict = {"packets": 0, "malformed": 0, "bad_checksums": 0, "expert": Counter(), "tcp_flags": Counter(),
                 "expert_error_messages": Counter()}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["tshark failed"])[-1]
        return out
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < 5:
            cols += [""] * (5 - len(cols))
        out["packets"] += 1
        sev = [int(s) for s in cols[2].split("\x1f") if s]
        grp = [int(g) for g in cols[3].split("\x1f") if g]
        msgs = [m for m in cols[4].split("\x1f") if m] if cols[4] else []
        malformed = bool(cols[1]) or GROUP_MALFORMED in grp
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
                    out["tcp_flags"][flag] += 1
                    break
    out["expert_errors"] = out["expert"].get("error", 0)
    out["tcp_errors"] = sum(out["tcp_flags"].get(f, 0) for f in TCP_ERROR_FLAGS)
    return out


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

    def replay(self, path: Path) -> dict:
        proc = self._ns("tcpreplay", "-q", "-t", "-i", self.iface, str(path))
        text = proc.stdout + proc.stderr
        def num(pattern: str) -> int:
            m = re.search(pattern, text)
            return int(m.group(1)) if m else 0
        sent = num(r"Successful packets:\s+(\d+)")
        return {"sent": sent, "failed": num(r"Failed packets:\s+(\d+)"),
                "truncated": num(r"Truncated packets:\s+(\d+)"), "rc": proc.returncode,
                **({"error": text.strip().splitlines()[-1]} if proc.returncode and text.strip() else {})}


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
    with ThreadPoolExecutor(workers) as pool:
        tshark = list(tqdm(pool.map(tshark_file, files), total=len(files), desc="tshark", **bar))
    caps = capinfos(files)
    scapy = [scapy_count(f) for f in tqdm(files, desc="scapy", **bar)]
    replays: list[dict | None] = [None] * len(files)
    if do_replay:
        with ReplayNamespace() as ns, ThreadPoolExecutor(min(workers, 4)) as pool:
            replays = list(tqdm(pool.map(ns.replay, files), total=len(files), desc="tcpreplay", **bar))
    per_file = []
    totals: Counter[str] = Counter()
    flags_total: Counter[str] = Counter()
    expert_total: Counter[str] = Counter()
    error_messages: Counter[str] = Counter()
    failed = []
    for f, ts, (scount, serr), rp in zip(files, tshark, scapy, replays, strict=True):
        cap = caps.get(str(f), {})
        packets = int(cap.get("Number of packets", ts["packets"]) or 0)
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
