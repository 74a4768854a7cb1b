"""Evaluate component: real vs synthetic datasets -> report.json, report.md and PNGs."""

from typing import List  # noqa: UP035 (KFP reads typing.List annotations)

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import image_for

IMAGE = image_for("evaluate")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_synthetic(real: Input[Dataset], train: Input[Dataset],
                       synthetic: Input[List[Dataset]],  # noqa: UP006
                       report: Output[Artifact], quick: bool = False, seed: int = 0) -> str:
    """``netdiffusion.evaluate.evaluate``: synthetic (merged per-class outputs) vs held-out ``real``,
    with ``train`` for memorisation checks; returns headline metrics as JSON."""
    import json
    import tempfile
    from pathlib import Path

    from components.common import evaluation_headline, merge_datasets, setup_logging, stage_log
    from netdiffusion.evaluate import evaluate

    setup_logging()
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:  # links to the inputs, removed after
        synthetic_dir = merge_datasets([d.path for d in synthetic], Path(scratch) / "synthetic")
        result = evaluate(real.path, synthetic_dir, train.path, report.path, quick=bool(quick),
                          seed=int(seed), synthetic_sources=[d.path for d in synthetic]) or {}
    headline = evaluation_headline(result)
    report.metadata.update(headline)
    stage_log("evaluate", **headline)
    return json.dumps(headline, default=str)
