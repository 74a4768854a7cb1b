"""``refresh``: encode shards -> train -> generate per class -> repair -> validate -> evaluate -> register."""

from typing import List, NamedTuple  # noqa: UP035 (KFP reads typing annotations)

from kfp import dsl
from kfp.dsl import Artifact, Model

from components.encode.component import encode_shard, list_classes, plan_shards
from components.evaluate.component import evaluate_synthetic
from components.register.component import register_model
from components.train.component import train_model
from pipelines.per_class import generate_repair_validate
from pipelines.placement import DEFAULT_GPU_NODE_SELECTOR, DEFAULT_GPU_TOLERATIONS, on_gpu, with_s3

NAME = "netdiffusion-refresh"

class Outputs(NamedTuple):
    pcaps: Artifact
    validation: Artifact
    report: Artifact
    model: Model
    registered: str


@dsl.pipeline(name=NAME, description="Refresh the synthetic traffic model from real captures and register it.")
def refresh(
    input_uri: str = "data/sample",
    classes: List[str] = [],  # noqa: B006, UP006 (empty = every class in the manifest)
    count: int = 10,
    packets: int = 1024,
    encode_shards: int = 4,
    backend: str = "native",
    config: str = "default",
    seed: int = 0,
    train_nodes: int = 1,
    train_gpus: int = 0,
    generate_gpus: int = 0,
    accelerator_type: str = "nvidia.com/gpu",
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
    s3_secret: str = "netdiffusion-s3",
    settings_config_map: str = "netdiffusion",
    staging_uri: str = "",
    tracking_uri: str = "",
    model_name: str = "",
    promote: bool = True,
    tracking_out: str = "",
    tcpreplay: bool = False,
    quick_evaluation: bool = False,
) -> Outputs:
    plan = plan_shards(input_uri=input_uri, classes=classes, shards=encode_shards).set_display_name("plan")
    with_s3(plan, s3_secret, settings_config_map)
    with dsl.ParallelFor(plan.output, name="encode-shards") as shard:
        encoded = encode_shard(shard=shard, packets=packets).set_display_name("encode")
        with_s3(encoded, s3_secret, settings_config_map)

    trained = train_model(
        data=dsl.Collected(encoded.outputs["data"]), backend=backend, config=config, seed=seed,
        num_nodes=train_nodes, gpus_per_node=train_gpus, node_selector=gpu_node_selector,
        tolerations=gpu_tolerations, staging_uri=staging_uri, s3_secret=s3_secret,
    ).set_display_name("train")
    on_gpu(trained, node_selector=gpu_node_selector, tolerations=gpu_tolerations,
           accelerator_type=accelerator_type, accelerator_limit=train_gpus)
    with_s3(trained, s3_secret, settings_config_map)

    labels = list_classes(input_uri=input_uri, classes=classes, model=trained.outputs["model"]
                          ).set_display_name("classes")
    with_s3(labels, s3_secret, settings_config_map)
    repaired, validated = generate_repair_validate(
        labels=labels.output, model=trained.outputs["model"], count=count, seed=seed,
        gpus=generate_gpus, accelerator_type=accelerator_type, gpu_node_selector=gpu_node_selector,
        gpu_tolerations=gpu_tolerations, tcpreplay=tcpreplay)
    evaluated = evaluate_synthetic(real=trained.outputs["holdout_data"], train=trained.outputs["train_data"],
                                   synthetic=dsl.Collected(repaired.outputs["repaired_data"]),
                                   quick=quick_evaluation, seed=seed).set_display_name("evaluate")
    registered = register_model(
        model=trained.outputs["model"], data=trained.outputs["train_data"],
        validation=validated.outputs["report"],
        evaluation=evaluated.outputs["report"], train_summary=trained.outputs["Output"],
        input_uri=input_uri, count=count, packets=packets, backend=backend, config=config, seed=seed,
        train_nodes=train_nodes, train_gpus=train_gpus,
        tracking_uri=tracking_uri, model_name=model_name, promote=promote, out=tracking_out,
    ).set_display_name("register")
    with_s3(registered, s3_secret, settings_config_map)
    return Outputs(pcaps=validated.outputs["pcaps"], validation=validated.outputs["report"],
                   report=evaluated.outputs["report"], model=trained.outputs["model"],
                   registered=registered.output)
