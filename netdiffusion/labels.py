"""Class labels for captures, and nDPI per-flow filtering.

A capture's label comes from, in order: a manifest CSV (``path,label,macro``; paths relative to the
manifest's folder); the class folder, for captures found in a subfolder of an input folder
(``pcaps/youtube/baseline_Jan17_exp_41.pcap`` is ``youtube``); the original NetDiffusion file
naming ``<label>_<NN>.pcap``; else the parent folder's name. nDPI's per-flow labels (``ndpi_flow_labels.csv``) can then drop the flows of a
capture that are not the application's own (a Netflix capture's DNS or SSDP flows).
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdiffusion.flows import KEY_BYTES

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(?P<label>.+?)_\d+$")
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".pcap.gz", ".pcapng.gz", ".cap.gz")
# the files of a rotating capture: tcpdump -C names them file.pcap, file.pcap1, file.pcap2, ...;
# others number them file.pcapng.1 (Wireshark's many_interfaces.pcapng.1)
_ROTATED = re.compile(r"\.(pcap|pcapng|cap)\.?(\d+)$", re.IGNORECASE)
# nDPI categories that are infrastructure noise rather than an application's own traffic
NOISE_CATEGORIES = frozenset({"Network", "System", ""})


@dataclass(frozen=True)
class Label:
    label: str
    macro: str
    origin: str  # "manifest", "filename" or "folder"


def is_capture_name(name: str) -> bool:
    """Whether a file name is a capture's: a :data:`CAPTURE_SUFFIXES` name or a rotated one."""
    return name.lower().endswith(CAPTURE_SUFFIXES) or _ROTATED.search(name) is not None


def capture_stem(path: str | os.PathLike) -> str:
    """The name without its capture suffix; a rotated file keeps its number (``zoom.pcap3`` ->
    ``zoom_3``, so the ``<label>_NN`` rule labels it ``zoom`` and no two files share a stem)."""
    name = Path(path).name
    for suffix in sorted(CAPTURE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    rotated = _ROTATED.search(name)
    if rotated:
        return f"{name[:rotated.start()]}_{rotated.group(2)}"
    return Path(name).stem


def load_manifest(path: str | os.PathLike) -> dict[Path, tuple[str, str]]:
    """Resolved capture path -> (label, macro) from a ``path,label,macro`` CSV."""
    path = Path(path)
    base = path.parent
    out: dict[Path, tuple[str, str]] = {}
    # utf-8-sig: spreadsheet programs write a byte order mark, which would otherwise hide "path"
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: manifest lacks column(s) {sorted(missing)}")
        for row in reader:
            label = (row["label"] or "").strip()
            if not label:  # an unnamed class would go through train, generate and repair as ""
                raise ValueError(f"{path}: line {reader.line_num}: empty label for {row['path']!r}")
            p = Path((row["path"] or "").strip())  # as the label: spaces around a cell are the CSV's
            full = (p if p.is_absolute() else base / p).resolve()
            if full in out and out[full][0] != label:  # one capture, one class: say which row wins
                log.warning("%s: line %d: %s is listed again, as class %r (it was %r): the last row wins",
                            path, reader.line_num, row["path"], label, out[full][0])
            out[full] = (label, (row.get("macro") or "").strip())
    macros: dict[str, set[str]] = {}
    for label, macro in out.values():
        macros.setdefault(label, set()).add(macro)
    for label, names in sorted(macros.items()):
        if len(names) > 1:  # one class has one macro class downstream (model, evaluation): say which rows disagree
            log.warning("%s: class %r has rows with several macro classes %s (a class belongs to one)",
                        path, label, sorted(names))
    return out


def label_for(path: str | os.PathLike, manifest: dict[Path, tuple[str, str]] | None = None,
              prefer_folder: bool = False) -> Label:
    """The label of one capture by the rules above (``prefer_folder``: it sits in a class folder)."""
    full = Path(path).resolve()
    if manifest and full in manifest:
        label, macro = manifest[full]
        return Label(label, macro, "manifest")
    if prefer_folder:
        return Label(full.parent.name, "", "folder")
    m = _NUMBERED.match(capture_stem(path))
    if m:
        return Label(m.group("label"), "", "filename")
    return Label(Path(path).resolve().parent.name, "", "folder")


# -- nDPI per-flow labels ------------------------------------------------------------------------

_L4_PROTO = {"TCP": 6, "UDP": 17, "ICMP": 1, "IGMP": 2, "ICMPV6": 58}


def _addr16(text: str) -> bytes:
    ip = ipaddress.ip_address(text.strip().strip("[]"))
    return ip.packed if ip.version == 6 else b"\x00" * 12 + ip.packed


_NDPI_KEY = 37  # nDPI keys: proto + two endpoints, no kind qualifier


def _key(proto: int, a: bytes, ap: int, b: bytes, bp: int) -> bytes:
    ea = a + ap.to_bytes(2, "big")
    eb = b + bp.to_bytes(2, "big")
    low, high = (ea, eb) if ea <= eb else (eb, ea)
    return bytes([proto & 0xFF]) + low + high


@dataclass
class FlowLabels:
    """nDPI flows per capture file name: canonical flow key -> (protocol, app, category)."""

    by_capture: dict[str, dict[bytes, tuple[str, str, str]]]

    @classmethod
    def load(cls, path: str | os.PathLike) -> FlowLabels:
        by_capture: dict[str, dict[bytes, tuple[str, str, str]]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                proto = _L4_PROTO.get(row["l4"].strip().upper())
                if proto is None:
                    continue
                try:
                    src, dst = _addr16(row["src"]), _addr16(row["dst"])
                except ValueError:
                    continue
                ports = (int(row["sport"] or 0), int(row["dport"] or 0)) if proto in (6, 17) else (0, 0)
                key = _key(proto, src, ports[0], dst, ports[1])
                by_capture.setdefault(row["pcap"].strip(), {})[key] = (
                    row.get("proto", ""), row.get("app", ""), (row.get("category") or "").strip())
        return cls(by_capture)

    def keep_mask(self, capture: str | os.PathLike, label: str, flow_keys: list[bytes]) -> tuple[np.ndarray, str]:
        """Which flows of a capture to keep, and the rule used.

        Rule: flows are matched by protocol and unordered endpoints (ICMP by addresses). If some
        nDPI flow of the capture names the label (``netflix`` in ``HTTP.NetFlix``), keep exactly
        the flows that do; otherwise (browser captures: plain TLS) keep every flow whose category
        is not infrastructure noise (DNS, SSDP, DHCP, ...). Flows nDPI did not list are dropped.
        A capture nDPI does not know at all keeps every flow; ``x.pcap.gz`` is looked up as ``x.pcap``."""
        name = Path(capture).name
        table = self.by_capture.get(name)
        if table is None and name.lower().endswith(".gz"):  # nDPI lists the capture, not its gzip copy
            table = self.by_capture.get(name[:-3])
        if table is None:
            return np.ones(len(flow_keys), dtype=bool), "not_in_flow_labels"
        needle = re.sub(r"[^a-z0-9]", "", label.lower())

        def names_label(info: tuple[str, str, str]) -> bool:
            return needle in re.sub(r"[^a-z0-9]", "", f"{info[0]}.{info[1]}".lower())

        by_label = any(names_label(info) for info in table.values())
        keep = np.zeros(len(flow_keys), dtype=bool)
        for i, key in enumerate(flow_keys):
            info = table.get(key[:_NDPI_KEY] if key[0] in (6, 17) else key[:1] + _zero_ports(key))
            if info is None:
                continue
            keep[i] = names_label(info) if by_label else info[2] not in NOISE_CATEGORIES
        return keep, "label_match" if by_label else "non_noise_category"


def _zero_ports(key: bytes) -> bytes:
    """Endpoints of a key with ports zeroed, re-canonicalized (ICMP / other protocols)."""
    assert len(key) == KEY_BYTES
    a, b = key[1:17], key[19:35]
    low, high = (a, b) if a <= b else (b, a)
    return low + b"\x00\x00" + high + b"\x00\x00"
