"""Validate component: all repaired pcaps -> one validated pcap tree + validation report."""

from typing import List  # noqa: UP035 (KFP reads typing.List annotations)

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components.images import image_for

IMAGE = image_for("validate")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_pcaps(repaired: Input[List[Artifact]], pcaps: Output[Artifact],  # noqa: UP006
                   report: Output[Artifact], tcpreplay: bool = False) -> str:
    """Merge the per-class ``<class>/*.pcap`` trees and run ``netdiffusion.validate.validate_dir`` on them."""
    import json
    from pathlib import Path

    from components.common import merge_trees, setup_logging, stage_log
    from netdiffusion.validate import validate_dir

    setup_logging()
    sources = [Path(r.path) / "pcaps" if (Path(r.path) / "pcaps").is_dir() else Path(r.path) for r in repaired]
    files = merge_trees(sources, pcaps.path, "*.pcap")
    Path(report.path).mkdir(parents=True, exist_ok=True)
    # tcpreplay only when asked: it needs root and a network namespace (None would mean "when possible")
    result = validate_dir(pcaps.path, Path(report.path) / "report.json", tcpreplay=bool(tcpreplay)) or {}
    totals = result.get("totals", {})
    summary = {k: totals[k] for k in ("files", "files_ok", "files_failed", "packets", "malformed",
                                      "bad_checksums", "expert_errors", "scapy_errors") if k in totals}
    summary["pcaps"] = files
    pcaps.metadata.update({"pcaps": files})
    report.metadata.update(summary)
    stage_log("validate", **summary)
    return json.dumps(summary, default=str)
