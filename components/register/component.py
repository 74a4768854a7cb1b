"""Register/promote, model resolution and publishing: the MLflow + object-storage edges of a run.

All tracking logic lives in ``netdiffusion.tracking``; these components only move artifacts.
"""

from typing import List  # noqa: UP035 (KFP reads typing annotations)

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import image_for

IMAGE = image_for("register")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(model: Input[Model], data: Input[Dataset], validation: Input[Artifact],
                   evaluation: Input[Artifact], train_summary: str, input_uri: str = "", count: int = 0,
                   packets: int = 0, backend: str = "native", config: str = "", seed: int = 0,
                   train_nodes: int = 1, train_gpus: int = 0, tracking_uri: str = "", model_name: str = "",
                   promote: bool = True, out: str = "", run_name: str = "refresh") -> str:
    """Log the refresh to MLflow (``netdiffusion.tracking.runs.log_refresh``) and register the model;
    with ``promote``, ``netdiffusion.tracking.registry.promote`` makes it ``challenger`` and moves
    ``champion`` to it only if its evaluation beats the current champion (as ``netdiffusion promote``).

    Returns JSON ``{"run_id", "model_name", "version", "model_uri", "alias", "promoted", "reason"}``.
    """
    import json
    from pathlib import Path

    from components.common import setup_logging, stage_log
    from netdiffusion.tracking.runs import TAG_MODEL_NAME, TAG_MODEL_VERSION, log_refresh
    from netdiffusion.tracking.settings import TrackingSettings

    setup_logging()
    settings = TrackingSettings.load(out=out or None, tracking_uri=tracking_uri or None,
                                     model_name=model_name or None)
    params = {"input_uri": input_uri, "count": count, "packets": packets, "backend": backend,
              "config": config, "seed": seed, "train_nodes": train_nodes, "train_gpus": train_gpus,
              "train": train_summary}
    run_id = log_refresh(run_name, settings=settings, params=params, dataset_uri=input_uri or None,
                         dataset_dir=data.path, model_dir=model.path,
                         validation_report=Path(validation.path) / "report.json",
                         evaluation_dir=evaluation.path, register=True, model_name=settings.model_name)
    import mlflow

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    name, version = tags.get(TAG_MODEL_NAME, settings.model_name), tags.get(TAG_MODEL_VERSION, "")
    result = {"run_id": run_id, "model_name": name, "version": version, "alias": "", "promoted": False,
              "reason": "not promoted", "model_uri": f"models:/{name}/{version}" if version else "",
              "tracking_uri": settings.tracking_uri}
    if promote and version:
        from netdiffusion.tracking.registry import promote as promote_version

        decision = promote_version(name, version, settings=settings)
        result.update(promoted=bool(decision["promoted"]), reason=str(decision["reason"]),
                      alias="champion" if decision["promoted"] else "challenger")
    stage_log("register", run_id=run_id, model=name, version=version, alias=result["alias"] or "-",
              reason=result["reason"])
    return json.dumps(result)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def resolve_model(model_uri: str, classes: List[str], model: Output[Model],  # noqa: UP006
                  tracking_uri: str = "") -> List[str]:  # noqa: UP006
    """Materialize a model (``models:/name@alias``, ``runs:/``, ``s3://`` or a local dir) as an artifact.

    Returns the classes to generate: ``classes`` if given, else every class the model knows.
    """
    import json
    import tempfile
    from pathlib import Path

    from components.common import as_list, publish, setup_logging, stage_log

    setup_logging()
    from netdiffusion.tracking.model import load_model_dir
    from netdiffusion.tracking.settings import TrackingSettings

    settings = TrackingSettings.load(tracking_uri=tracking_uri or None)
    with tempfile.TemporaryDirectory(prefix="model-") as scratch:  # a downloaded model: copied, then removed
        publish(load_model_dir(model_uri, scratch, settings=settings), model.path)
    info = json.loads((Path(model.path) / "model.json").read_text())
    known = [str(c) for c in info.get("classes", [])]
    wanted = as_list(classes) or known
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"{model_uri}: model has no class(es) {', '.join(unknown)} (it knows {', '.join(known)})")
    model.metadata.update({"source": model_uri, "model_id": str(info.get("model_id", "")), "classes": len(known)})
    stage_log("resolve", model=model_uri, classes=len(wanted))
    return wanted


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish_outputs(pcaps: Input[Artifact], validation: Input[Artifact],
                    repaired_data: Input[List[Dataset]], output_uri: str) -> str:  # noqa: UP006
    """Copy validated pcaps, the validation report and repaired Parquet to ``output_uri`` (if set)."""
    import json
    import tempfile

    from components.common import merge_datasets, publish, setup_logging, stage_log

    setup_logging()
    if not output_uri:
        stage_log("publish", skipped="no output_uri")
        return json.dumps({"uri": ""})
    base = output_uri.rstrip("/")
    counts = {"pcaps": publish(pcaps.path, f"{base}/pcaps"),
              "reports": publish(validation.path, f"{base}/validation")}
    with tempfile.TemporaryDirectory(prefix="publish-") as scratch:
        counts["parquet"] = publish(merge_datasets([d.path for d in repaired_data], scratch), f"{base}/data")
    stage_log("publish", uri=base, **counts)
    return json.dumps({"uri": base, **counts})
