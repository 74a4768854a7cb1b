"""``generate``: registered model (version or alias) -> classes x count -> repaired, validated pcaps."""

from typing import List, NamedTuple  # noqa: UP035 (KFP reads typing annotations)

from kfp import dsl
from kfp.dsl import Artifact

from components.register.component import publish_outputs, resolve_model
from pipelines.per_class import generate_repair_validate
from pipelines.placement import DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATIONS, with_s3

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
    settings_config_map: str = "netdiffusion",
    tracking_uri: str = "",
    output_uri: str = "",
    tcpreplay: bool = False,
) -> Outputs:
    resolved = resolve_model(model_uri=model_uri, classes=classes, tracking_uri=tracking_uri
                             ).set_display_name("resolve-model")
    with_s3(resolved, s3_secret, settings_config_map)
    repaired, validated = generate_repair_validate(
        labels=resolved.outputs["Output"], model=resolved.outputs["model"], count=count, seed=seed,
        gpus=generate_gpus, accelerator_type=accelerator_type, gpu_node_selector=gpu_node_selector,
        gpu_tolerations=gpu_tolerations, tcpreplay=tcpreplay)
    # always runs (a no-op without output_uri): kfp 2.17 cannot compile Collected inside dsl.If
    published = publish_outputs(pcaps=validated.outputs["pcaps"], validation=validated.outputs["report"],
                                repaired_data=dsl.Collected(repaired.outputs["repaired_data"]),
                                output_uri=output_uri).set_display_name("publish")
    with_s3(published, s3_secret, settings_config_map)
    return Outputs(pcaps=validated.outputs["pcaps"], validation=validated.outputs["report"])
