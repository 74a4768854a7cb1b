"""The per-class tail both pipelines share: generate (on the GPU pool) -> repair per class, then validate all.

Called inside a ``@dsl.pipeline`` function, so the tasks land in that pipeline; ``generate`` and
``refresh`` differ only in where the model and the class list come from.
"""

from kfp import dsl
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from components.generate.component import generate_class
from components.repair.component import repair_flows
from components.validate.component import validate_pcaps
from pipelines.placement import on_gpu


def generate_repair_validate(*, labels: PipelineChannel, model: PipelineChannel, count, seed, gpus,
                             accelerator_type, gpu_node_selector, gpu_tolerations,
                             tcpreplay) -> tuple[PipelineTask, PipelineTask]:
    """Fan out over ``labels`` (4 at a time) and collect into one validate task; returns (repair, validate).

    The repair task is returned so callers can ``dsl.Collected`` its other outputs (``repaired_data``).
    """
    with dsl.ParallelFor(labels, parallelism=4, name="per-class") as label:
        generated = generate_class(model=model, label=label, count=count, seed=seed,
                                   gpus=gpus, accelerator=accelerator_type).set_display_name("generate")
        on_gpu(generated, node_selector=gpu_node_selector, tolerations=gpu_tolerations,
               accelerator_type=accelerator_type, accelerator_limit=gpus)
        repaired = repair_flows(generated=generated.outputs["generated"]).set_display_name("repair")
    validated = validate_pcaps(repaired=dsl.Collected(repaired.outputs["repaired"]),
                               tcpreplay=tcpreplay).set_display_name("validate")
    return repaired, validated
