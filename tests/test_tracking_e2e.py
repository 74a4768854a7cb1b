"""Issue 7 acceptance: a tiny refresh logged to a real MLflow server with artifacts in real S3,
registered, promoted only when better, and loaded back as ``models:/NAME@champion`` to generate.

Everything runs for real: ``train`` (tiny native model), ``generate``, ``repair``, ``validate``
(no tcpreplay), ``evaluate`` (quick), the
SeaweedFS S3 server and ``mlflow server`` from tests/services.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pandas as pd
import pytest

from netdiffusion.tracking.settings import TrackingSettings
from tests.services import MlflowServer, isolated_mlflow  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("isolated_mlflow")]

TSTR = "utility.train_synthetic_test_real.*.*.accuracy"


@pytest.fixture(scope="module")
def refresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | dict]:
    """Real tiny refresh outputs: data, model, generated flows, repaired pcaps + validation, evaluation."""
    from netdiffusion.evaluate import evaluate
    from netdiffusion.model.generate import generate
    from netdiffusion.model.testing import write_synthetic_dataset
    from netdiffusion.model.train import train
    from netdiffusion.repair import repair_dataset
    from netdiffusion.validate import validate_dir

    root = tmp_path_factory.mktemp("refresh")
    data = write_synthetic_dataset(root / "data", flows=6, seed=0)
    heldout = write_synthetic_dataset(root / "heldout", flows=6, seed=1)
    train(data, root / "model", backend="native", config="tiny", seed=0)
    stats = generate(root / "model", root / "generated", count=4, seed=0)
    repair_dataset(root / "generated", root / "pcaps")
    validate_dir(root / "pcaps", root / "validation" / "report.json", tcpreplay=False)
    evaluate(heldout, root / "generated", data, root / "evaluation", quick=True, models=["rf"], seed=0)
    return {"data": data, "model": root / "model", "generated": root / "generated",
            "repair_report": root / "pcaps" / "repair_report.json",
            "validation_report": root / "validation" / "report.json",
            "evaluation": root / "evaluation", "generate_stats": stats, "root": root}


def server_settings(server: MlflowServer, experiment: str, model_name: str, out: Path) -> TrackingSettings:
    s3 = server.s3
    return TrackingSettings.load(env={}, out=out, tracking_uri=server.url, experiment=experiment,
                                 model_name=model_name, s3_endpoint=s3.endpoint, bucket=s3.bucket,
                                 access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region,
                                 prefix="e2e")


def variant(refresh: dict, target: Path, *, jsd_factor: float = 1.0, accuracy_delta: float = 0.0) -> Path:
    """The real evaluation report with its headline numbers shifted (to get a better/worse run).
    Only ``report.json`` is copied: the PNGs were checked once, uploading them again is just time."""
    target.mkdir(parents=True)
    report = json.loads((refresh["evaluation"] / "report.json").read_text())
    report["similarity"]["overall"]["jsd"] *= jsd_factor
    for task in report["utility"]["train_synthetic_test_real"].values():
        for scores in task.values():
            if scores["accuracy"] is not None:  # null where a task has fewer than 2 classes
                scores["accuracy"] = min(1.0, max(0.0, scores["accuracy"] + accuracy_delta))
    (target / "report.json").write_text(json.dumps(report))
    return target


CLEAN = {"summary": {"files": 8, "failed": 0}}
DIRTY = {"summary": {"files": 8, "failed": 2}}


def test_refresh_logged_registered_promoted_and_loaded(mlflow_server: MlflowServer, refresh: dict,
                                                       tmp_path: Path) -> None:
    import mlflow

    from netdiffusion.tracking import load_model, load_model_dir, log_refresh, promote, publish
    from netdiffusion.tracking.runs import TAG_MODEL_VERSION, TAG_VALIDATION_CLEAN, validation_clean

    settings = server_settings(mlflow_server, "e2e", "e2e-model", tmp_path)
    settings.check()
    dataset_uri = publish(refresh["data"], settings.s3_uri("datasets", "train"), settings)
    run_id = log_refresh("e2e", settings=settings, params={"count": 4, "seed": 0}, dataset_uri=dataset_uri,
                         dataset_dir=refresh["data"], model_dir=refresh["model"],
                         generate_stats=refresh["generate_stats"], generated_dir=refresh["generated"],
                         repair_report=refresh["repair_report"], validation_report=refresh["validation_report"],
                         evaluation_dir=refresh["evaluation"])

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    run = client.get_run(run_id)
    report = json.loads((refresh["evaluation"] / "report.json").read_text())
    model_json = json.loads((refresh["model"] / "model.json").read_text())
    # params: dataset URI + content hash, classes, packets, model config, seeds
    assert run.data.params["dataset.uri"] == dataset_uri
    assert run.data.params["dataset.hash"].startswith("sha256:")
    assert run.data.params["classes"] == "alpha,beta"
    assert run.data.params["model.config.training.steps"] == str(model_json["config"]["training"]["steps"])
    assert run.data.params["seed"] == "0"
    # metrics: every evaluation number under its report key, loss curve with one point per step
    assert run.data.metrics["similarity.overall.jsd"] == pytest.approx(report["similarity"]["overall"]["jsd"])
    assert "utility.train_synthetic_test_real.micro.rf.accuracy" in run.data.metrics
    steps = len((refresh["model"] / "metrics.jsonl").read_text().splitlines())
    assert len(client.get_metric_history(run_id, "train.loss")) == steps
    assert run.data.metrics["generate.flows"] == 8
    assert run.data.metrics["repair.totals.flows"] == 8
    validation = json.loads(refresh["validation_report"].read_text())
    assert run.data.metrics["validate.totals.files"] == validation["totals"]["files"] == 8
    clean = validation_clean(validation)
    assert run.data.tags[TAG_VALIDATION_CLEAN] == str(clean).lower()
    # the dataset is a logged input with the S3 URI as source
    inputs = run.inputs.dataset_inputs
    assert inputs and dataset_uri in inputs[0].dataset.source
    # prompts table
    prompts = mlflow.artifacts.load_dict(f"runs:/{run_id}/prompts.json")
    assert prompts["prompts"] == model_json["prompts"]

    # artifacts are objects in the S3 bucket, behind the server's proxy
    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3.endpoint, aws_access_key_id=mlflow_server.s3.access_key,
                      aws_secret_access_key=mlflow_server.s3.secret_key, region_name=mlflow_server.s3.region)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_server.s3.bucket)
            for o in page.get("Contents", [])]
    run_keys = [k for k in keys if f"/{run_id}/artifacts/" in k]
    for suffix in ("prompts.json", "evaluation/report.json", "evaluation/report.md", "evaluation/field_jsd.png",
                   "validate/report.json", "repair/report.json", "train/metrics.jsonl"):
        assert any(k.endswith(suffix) for k in run_keys), f"{suffix} not in bucket: {run_keys}"
    assert any(k.endswith("/MLmodel") for k in keys)
    assert any(k.endswith("diffusion_pytorch_model.safetensors") for k in keys)
    assert any(k.startswith("e2e/datasets/train/") for k in keys)

    # a registered version that points back at the run
    version = run.data.tags[TAG_MODEL_VERSION]
    assert client.get_model_version("e2e-model", version).run_id == run_id

    # the tiny model's pcaps may fail validation: then it must not become champion unless allowed
    decision = promote("e2e-model", run_id=run_id, settings=settings)
    assert decision["promoted"] is clean and decision["validation_clean"] is clean
    if not clean:
        assert decision["reason"] == "validation not clean" and decision["champion_after"] is None
        decision = promote("e2e-model", run_id=run_id, settings=settings, require_clean_validation=False)
    assert decision["promoted"] and decision["reason"] == "no current champion"
    assert client.get_model_version_by_alias("e2e-model", "champion").version == version

    # models:/NAME@champion loads and generates, as a plain dir and through the pyfunc
    from netdiffusion.model.generate import generate

    local = load_model_dir("models:/e2e-model@champion", tmp_path / "champion", settings=settings)
    stats = generate(local, tmp_path / "gen", classes=["beta"], count=2, seed=3)
    assert stats["per_class"]["beta"]["flows"] == 2
    pyfunc = load_model("models:/e2e-model@champion")
    result = pyfunc.predict(pd.DataFrame({"class": ["alpha", "beta"], "count": [3, 1], "seed": [0, 1]}),
                            params={"output_dir": str(tmp_path / "pyfunc")})
    assert result["flows"].tolist() == [3, 1] and (result["packets"] > 0).all()
    assert all(Path(p, "fields.json").exists() for p in result["output"])


def test_promotion_moves_champion_only_when_better(mlflow_server: MlflowServer, refresh: dict,
                                                    tmp_path: Path) -> None:
    import mlflow

    from netdiffusion.tracking import log_refresh, promote

    settings = server_settings(mlflow_server, "e2e-promote", "promote-model", tmp_path)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)

    def log(name: str, evaluation: Path, validation: dict) -> str:
        return log_refresh(name, settings=settings, model_dir=refresh["model"], validation_report=validation,
                           evaluation_dir=evaluation)

    base = log("base", refresh["evaluation"], CLEAN)
    assert promote("promote-model", run_id=base, settings=settings)["champion_after"] == 1

    worse = log("worse", variant(refresh, tmp_path / "worse", jsd_factor=1.5, accuracy_delta=-0.2), CLEAN)
    decision = promote("promote-model", run_id=worse, settings=settings)
    assert not decision["promoted"] and decision["reason"].startswith("worse on similarity.overall.jsd")
    assert decision["metrics"]["similarity.overall.jsd"]["candidate"] > decision["metrics"][
        "similarity.overall.jsd"]["champion"]
    assert client.get_model_version_by_alias("promote-model", "champion").version == "1"
    assert client.get_model_version_by_alias("promote-model", "challenger").version == "2"
    assert client.get_model_version("promote-model", "2").tags["promotion.decision"] == "rejected"

    better = log("better", variant(refresh, tmp_path / "better", jsd_factor=0.5), CLEAN)
    decision = promote("promote-model", run_id=better, settings=settings)
    assert decision["promoted"] and decision["champion_before"] == 1 and decision["champion_after"] == 3
    assert client.get_model_version_by_alias("promote-model", "champion").version == "3"
    logged = [a.path for a in client.list_artifacts(better, "promotion")]
    assert logged and mlflow.artifacts.load_dict(f"runs:/{better}/{logged[0]}")["promoted"] is True

    dirty = log("dirty", variant(refresh, tmp_path / "dirty", jsd_factor=0.1), DIRTY)
    decision = promote("promote-model", run_id=dirty, settings=settings)
    assert not decision["promoted"] and decision["reason"] == "validation not clean"
    assert client.get_model_version_by_alias("promote-model", "champion").version == "3"


def test_promote_cli(mlflow_server: MlflowServer, refresh: dict, tmp_path: Path, monkeypatch, capsys) -> None:
    from netdiffusion.cli import main
    from netdiffusion.tracking import log_refresh

    settings = server_settings(mlflow_server, "e2e-cli", "cli-model", tmp_path)
    for key, value in mlflow_server.s3.env().items():
        monkeypatch.setenv(key, value)
    first = log_refresh("cli-1", settings=settings, model_dir=refresh["model"], validation_report=CLEAN,
                        evaluation_dir=refresh["evaluation"])
    log_refresh("cli-2", settings=settings, model_dir=refresh["model"], validation_report=CLEAN,
                evaluation_dir=variant(refresh, tmp_path / "worse", jsd_factor=2.0))
    common = ["--tracking-uri", mlflow_server.url, "--model", "cli-model"]
    assert main(["promote", *common, "--run", first]) == 0
    assert "cli-model v1 is now champion: no current champion" in capsys.readouterr().out
    assert main(["promote", *common, "--version", "2", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["promoted"] is False and decision["champion_after"] == 1
    # a metric set the candidate wins on: only TSTR accuracy, equal -> still not promoted
    assert main(["promote", *common, "--version", "2", "--metric", f"{TSTR}:max"]) == 0
    assert "stays challenger: not better on any metric (equal)" in capsys.readouterr().out
    assert main(["promote", *common, "--version", "99"]) == 2
