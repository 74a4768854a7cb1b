"""Train component: collected encode shards -> model directory.

On a cluster (``launcher`` ``auto``/``trainjob``) it stages the dataset in object storage, creates a
Kubeflow Trainer ``TrainJob`` (``trainjob.py``) running ``netdiffusion train`` under torchrun on
``num_nodes`` nodes, waits, and downloads the model into its output artifact. Without a cluster it
runs the same library call in-process.
"""

from typing import List  # noqa: UP035 (KFP reads typing.List annotations)

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_for

IMAGE = image_for("train")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    data: Input[List[Dataset]],  # noqa: UP006
    model: Output[Model],
    train_data: Output[Dataset],
    holdout_data: Output[Dataset],
    backend: str = "native",
    config: str = "default",
    seed: int = 0,
    num_nodes: int = 1,
    gpus_per_node: int = 0,
    node_selector: dict = {},  # noqa: B006 (KFP parameter default, never mutated)
    tolerations: list = [],  # noqa: B006
    staging_uri: str = "",
    s3_secret: str = "",
    launcher: str = "auto",
    holdout: float = 0.2,
) -> str:
    """Split the merged shards by flow (``holdout`` share kept out for evaluation), train on the rest.

    Returns a JSON summary (steps, loss, seconds, where it ran, flows per split).
    """
    import json
    import os
    import tempfile
    import time
    from pathlib import Path

    from components.common import merge_datasets, nothing_encoded, publish, setup_logging, stage_log

    setup_logging()
    # merged inputs (links) and a fetched model: copied into the outputs, then removed
    with tempfile.TemporaryDirectory(prefix="train-") as tmp:
        scratch = Path(tmp)
        merged = merge_datasets([d.path for d in data], scratch / "data")
        if not any(merged.rglob("*.parquet")):  # every capture rejected or empty: say which and why
            raise ValueError(nothing_encoded([d.path for d in data]))
        from netdiffusion.dataset import split_dataset

        split = split_dataset(merged, train_data.path, holdout_data.path, holdout=float(holdout), seed=int(seed))
        stage_log("split", train_flows=sum(split["train"].values()), holdout_flows=sum(split["holdout"].values()))
        config_value = json.loads(config) if config.strip().startswith("{") else (config or None)
        from components.train.trainjob import in_cluster

        use_trainjob = launcher == "trainjob" or (launcher == "auto" and in_cluster() and bool(staging_uri))
        started = time.monotonic()
        if use_trainjob:
            from components.common import fetch
            from components.images import image_for
            from components.train.trainjob import (
                build_trainjob,
                current_namespace,
                run_trainjob,
                train_command,
                trainjob_name,
            )

            run_id = trainjob_name("nd", Path(model.path).parent.name or str(int(time.time())))
            data_uri = f"{staging_uri.rstrip('/')}/{run_id}/data"
            model_uri = f"{staging_uri.rstrip('/')}/{run_id}/model"
            publish(train_data.path, data_uri)
            secret_env = ({v: (s3_secret, v) for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
                          if s3_secret else None)
            passthrough = ("NETDIFFUSION_S3_ENDPOINT", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_REGION")
            manifest = build_trainjob(
                run_id, image=image_for("train"), namespace=current_namespace(),
                command=train_command(data_uri=data_uri, model_uri=model_uri, backend=backend,
                                      config=config, seed=seed),
                num_nodes=num_nodes, gpus_per_node=gpus_per_node, node_selector=node_selector or None,
                tolerations=tolerations or None, secret_env=secret_env,
                env={k: v for k in passthrough if (v := os.environ.get(k))},
            )
            run_trainjob(manifest)
            fetched = fetch(model_uri, scratch / "model")
            publish(fetched, model.path)
            summary = {"launcher": "trainjob", "trainjob": run_id, "nodes": num_nodes}
        else:
            from netdiffusion.model.train import train

            summary = {"launcher": "in-process", **(train(train_data.path, model.path, backend=backend,
                                                          config=config_value, seed=seed) or {})}
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["flows"] = {"train": sum(split["train"].values()), "holdout": sum(split["holdout"].values())}
    model.metadata.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    train_data.metadata.update({"flows": summary["flows"]["train"]})
    holdout_data.metadata.update({"flows": summary["flows"]["holdout"]})
    stage_log("train", launcher=summary["launcher"], backend=backend, config=config if len(config) < 40
              else "custom", seconds=summary["seconds"])
    return json.dumps(summary, default=str)
