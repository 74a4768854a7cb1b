"""Repair on real traffic: how many real flows does repair change, and why?

Real captures are valid already, so repair should leave their headers alone. Every capture under
``$NETDIFFUSION_REAL_PCAPS`` (default: the shared data's ``pcaps/``; point it at any folder of
captures, e.g. nDPI's ``tests/pcap``) is encoded on its own (1,024 packets per flow) and repaired
with ``mtu=65535`` (real GRO/TSO segments). Reported:

- flows and packets, bits changed per rule (L4 checksums excluded: payloads are synthetic);
- flows changed, and of those the ones tshark shows *no* capture loss in (lost or unseen-ACKed
  segments, which repair closes by design), by rule: these are the flows to look at;
- the same for flows whose only change is the IPv4 header checksum (checked: captures taken on
  the sending host often hold offloaded, not yet computed, checksums);
- validation of the repaired pcaps (tshark, capinfos, scapy; no tcpreplay) over at most
  ``VALIDATE_FILES`` of them, spread over the captures.

A capture the encoder rejects is counted, not fatal. Run alone: ``python -m bench.run_all repair_real``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

LOSS_FLAGS = ("lost_segment", "ack_lost_segment")
VALIDATE_FILES = 400


def _root() -> Path:
    env = os.environ.get("NETDIFFUSION_REAL_PCAPS")
    shared = Path(os.environ.get("NETDIFFUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return Path(env) if env else shared / "pcaps"


def _captures(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and ".pcap" in p.name)


def main() -> dict:
    from netdiffusion.decode import decode_dataset, flow_pcap_path
    from netdiffusion.encode import encode_paths
    from netdiffusion.repair import repair_dataset
    from netdiffusion.validate import tshark_file, validate_dir

    root = _root()
    captures = _captures(root)
    started = time.perf_counter()
    totals: Counter[str] = Counter()
    bits: Counter[str] = Counter()
    changed_rules: Counter[str] = Counter()
    unexplained_rules: Counter[str] = Counter()
    unexplained_captures: Counter[str] = Counter()
    unexplained_examples: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        outputs = []
        for i, capture in enumerate(captures):
            work = tmp / f"{i:04d}"
            try:
                summary = encode_paths([capture], work / "enc", packets=1024, progress=False)
            except Exception as exc:  # a capture the encoder cannot take is counted, not fatal
                totals["captures_failed"] += 1
                unexplained_examples.append({"capture": capture.name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if not summary.get("packets"):
                totals["captures_without_rows"] += 1
                continue
            rep = repair_dataset(work / "enc", work / "pcaps", mtu=65535, progress=False)
            outputs.append(work / "pcaps")
            totals["captures"] += 1
            totals["flows"] += rep["flows"]
            totals["packets"] += rep["packets"]
            totals["flows_dropped"] += rep["flows_dropped"]
            bits.update({r: v for r, v in rep["bits_changed"].items() if r != "l4_checksum"})
            flows = json.loads((work / "pcaps" / "repair_report.json").read_text())["flows"]
            changed = [f for f in flows if f["bits_changed_total"]]
            if not changed:
                continue
            decode_dataset(work / "enc", work / "decoded")
            for flow in changed:
                rules = sorted(r for r in flow["bits_changed"] if r != "l4_checksum")
                changed_rules.update(rules)
                totals["flows_changed"] += 1
                if rules == ["ipv4_checksum"]:
                    totals["flows_changed_ipv4_checksum_only"] += 1
                    continue
                flags = tshark_file(flow_pcap_path(work / "decoded", flow["label"], flow["flow_id"]))["tcp_flags"]
                if any(flags.get(f) for f in LOSS_FLAGS):
                    totals["flows_changed_with_capture_loss"] += 1
                    continue
                totals["flows_changed_unexplained"] += 1
                unexplained_rules.update(rules)
                unexplained_captures[capture.name] += 1
                if len(unexplained_examples) < 20:
                    unexplained_examples.append({"capture": capture.name, "flow_id": flow["flow_id"],
                                                 "bits_changed": flow["bits_changed"]})
            shutil.rmtree(work / "decoded", ignore_errors=True)
        # validate a spread of the repaired pcaps
        every = [p for out in outputs for p in sorted(out.rglob("*.pcap"))]
        step = max(1, len(every) // VALIDATE_FILES)
        sample = every[::step][:VALIDATE_FILES]
        vdir = tmp / "validate"
        for k, f in enumerate(sample):
            (vdir / "real").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, vdir / "real" / f"{k:05d}_{f.name}")
        val = validate_dir(vdir, progress=False, tcpreplay=False) if sample else {"totals": {}, "files": []}
    failed = [{"file": f["file"], "failed_checks": f["failed_checks"]} for f in val["files"] if not f["ok"]]
    return {
        "source": str(root), "capture_files": len(captures),
        **dict(totals), "bits_changed_by_rule": dict(bits.most_common()),
        "flows_changed_by_rule": dict(changed_rules.most_common()),
        "flows_changed_unexplained_by_rule": dict(unexplained_rules.most_common()),
        "flows_changed_unexplained_by_capture": dict(unexplained_captures.most_common()),
        "unexplained_examples": unexplained_examples,
        "validated_files": val["totals"].get("files", 0), "validated_packets": val["totals"].get("packets", 0),
        "validated_files_failed": val["totals"].get("files_failed", 0),
        "validated_failures": failed[:20],
        "seconds": round(time.perf_counter() - started, 1),
    }
