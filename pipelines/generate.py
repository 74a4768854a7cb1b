"""``generate``: registered model (version or alias) -> classes x count -> repaired, validated pcaps."""

from typing import List, NamedTuple  # noqa: UP035 (KFP reads typing annotations)

from kfp import dsl
from kfp.dsl import Artifact

from components.generate.component import generate_class
from components.register.component import publish_outputs, resolve_model
from components.repair.component import repair_flows
from components.validate.component import validate_pcaps
from pipelines.placement import DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATIONS, on_gpu, with_s3_secret

NAME = "netdiffusion-generate"

class Outputs(NamedTuple):
    pcaps: Artifact
    validation: Artifact


@dsl.pipeline(name=NAME, description="Generate validated synthetic pcaps per class from a registered model.")
def generate(
    model_uri: str = "models:/netdiffusion@champion",
    classes: List[str] = [],  # noqa: B006, UP006 (empty = every class the model knows)
    count: int = 100,
    seed: int = 0,
    generate_gpus: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    s3_secret: str = "netdiffusion-s3",
    tracking_uri: str = "",
    output_uri: str = "",
    tcpreplay: bool = False,
) -> Outputs:
    resolved = resolve_model(model_uri=model_uri, classes=classes, tracking_uri=tracking_uri
                             ).set_display_name("resolve-model")
    with_s3_secret(resolved, s3_secret)
    with dsl.ParallelFor(resolved.outputs["Output"], parallelism=4, name="per-class") as label:
        generated = generate_class(model=resolved.outputs["model"], label=label, count=count, seed=seed,
                                   gpus=generate_gpus, accelerator=accelerator_type).set_display_name("generate")
        on_gpu(generated, node_selector=gpu_node_selector, tolerations=gpu_tolerations,
               accelerator_type=accelerator_type, accelerator_limit=generate_gpus)
        repaired = repair_flows(generated=generated.outputs["generated"]).set_display_name("repair")
    validated = validate_pcaps(repaired=dsl.Collected(repaired.outputs["repaired"]),
                               tcpreplay=tcpreplay).set_display_name("validate")
    # always runs (a no-op without output_uri): kfp 2.17 cannot compile Collected inside dsl.If
    published = publish_outputs(pcaps=validated.outputs["pcaps"], validation=validated.outputs["report"],
                                repaired_data=dsl.Collected(repaired.outputs["repaired_data"]),
                                output_uri=output_uri).set_display_name("publish")
    with_s3_secret(published, s3_secret)
    return Outputs(pcaps=validated.outputs["pcaps"], validation=validated.outputs["report"])
