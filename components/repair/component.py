"""Repair component: generated flows -> protocol-valid pcaps (+ the repaired dataset)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import image_for

IMAGE = image_for("repair")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def repair_flows(generated: Input[Dataset], repaired: Output[Artifact], repaired_data: Output[Dataset],
                 anonymize: bool = False, payload: str = "zero") -> int:
    """``netdiffusion.repair.repair_dataset``: writes ``<class>/<flow>.pcap`` + ``repair_report.json``."""
    from components.common import setup_logging, stage_log
    from netdiffusion.repair import repair_dataset

    setup_logging()
    summary = repair_dataset(generated.path, repaired.path, dataset_output=repaired_data.path,
                             anonymize=bool(anonymize), payload=payload) or {}
    pcaps = int(summary.get("flows", 0))
    label = generated.metadata.get("label", "")
    repaired.metadata.update({"pcaps": pcaps, "label": label})
    stage_log("repair", label=label, pcaps=pcaps, dropped=summary.get("flows_dropped", 0),
              bits_changed_share=summary.get("bits_changed_share", ""))
    return pcaps
