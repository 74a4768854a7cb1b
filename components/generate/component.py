"""Generate component: model + one class -> generated flows (Parquet), one task per class."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_for

IMAGE = image_for("generate")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def generate_class(model: Input[Model], label: str, generated: Output[Dataset], count: int = 10,
                   seed: int = 0, batch: int = 0, gpus: int = 0, accelerator: str = "") -> int:
    """``netdiffusion.model.generate.generate`` for one class; returns the number of flows made.

    ``gpus``/``accelerator`` are the task's requested accelerator (the pipeline sets the same values
    as its resource limit); the task warns when GPUs were requested but none is visible.
    """
    import logging

    from components.common import setup_logging, stage_log
    from netdiffusion.model.generate import generate

    setup_logging()
    if int(gpus) > 0:
        import torch

        if not torch.cuda.is_available():
            logging.getLogger("netdiffusion.components").warning(
                "stage=generate requested %d %s but no CUDA device is visible: generating on CPU", gpus, accelerator)
    # the library derives a distinct noise stream per (seed, class), so tasks never draw the same noise
    summary = generate(model.path, generated.path, classes=[label], count=int(count), seed=int(seed),
                       batch=int(batch) or None) or {}
    flows = int(summary.get("flows", count))
    generated.metadata.update({"label": label, "flows": flows, "seed": int(seed)})
    stage_log("generate", label=label, flows=flows, seconds=summary.get("seconds", ""))
    return flows
