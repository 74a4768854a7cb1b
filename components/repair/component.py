"""Repair component: generated flows -> protocol-valid pcaps (+ the repaired dataset)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import image_for

IMAGE = image_for("repair")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def repair_flows(generated: Input[Dataset], repaired: Output[Artifact], repaired_data: Output[Dataset],
                 anonymize: bool = False, payload: str = "zero") -> int:
    """``netdiffusion.repair.repair_dataset``: writes ``pcaps/<class>/*.pcap`` + ``repair_report.json``."""
    from netdiffusion.repair import repair_dataset

    from components.common import setup_logging, stage_log

    setup_logging()
    summary = repair_dataset(generated.path, repaired.path, dataset_output=repaired_data.path,
                             anonymize=bool(anonymize), payload=payload) or {}
    pcaps = int(summary.get("pcaps", summary.get("flows", 0)))
    repaired.metadata.update({"pcaps": pcaps, "label": generated.metadata.get("label", "")})
    stage_log("repair", label=generated.metadata.get("label", ""), pcaps=pcaps,
              skipped=summary.get("skipped", 0))
    return pcaps
