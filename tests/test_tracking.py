"""Tracking: settings, report flattening, promotion rules, and a refresh logged to the local default store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from netdiffusion.tracking.registry import compare, metric_value, parse_metric_specs
from netdiffusion.tracking.runs import (
    class_prompts,
    flatten,
    numeric_leaves,
    read_train_metrics,
    validation_clean,
)
from netdiffusion.tracking.settings import ConfigError, TrackingSettings, ui_hint
from tests.services import isolated_mlflow  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("isolated_mlflow")


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "tracking.yaml"
    config.write_text("tracking:\n  bucket: from-file\n  experiment: file-exp\n  model_name: file-model\n")
    env = {"NETDIFFUSION_S3_BUCKET": "from-env", "AWS_ENDPOINT_URL": "http://s3.example:9000",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    s = TrackingSettings.load(config, out=tmp_path, env=env, model_name="from-arg")
    assert (s.bucket, s.experiment, s.model_name) == ("from-env", "file-exp", "from-arg")
    assert s.s3_endpoint == "http://s3.example:9000"
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert s.artifact_root == "s3://from-env/netdiffusion/mlartifacts"
    assert "s3cr3t" not in repr(s) and s.redacted()["secret_key"] == "***"
    assert s.s3_uri("datasets", "v1") == "s3://from-env/netdiffusion/datasets/v1"
    local = TrackingSettings.load(out=tmp_path, env={})
    assert local.artifact_root == (tmp_path.resolve() / "mlartifacts").as_uri()
    assert "mlflow ui --backend-store-uri sqlite:///" in ui_hint(local)
    assert "http://mlflow:5000" in ui_hint(TrackingSettings.load(env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bukket": "x"}))
    with pytest.raises(ConfigError, match="unknown setting"):
        TrackingSettings.load(bad, env={})


def test_check_without_s3_and_half_credentials(tmp_path: Path) -> None:
    TrackingSettings.load(out=tmp_path, env={}).check()  # local sqlite: nothing to reach
    with pytest.raises(ConfigError) as excinfo:
        TrackingSettings.load(out=tmp_path, env={}, bucket="b", access_key="only-id").check()
    assert excinfo.value.setting == "AWS_SECRET_ACCESS_KEY"
    with pytest.raises(ConfigError) as excinfo:
        TrackingSettings.load(out=tmp_path, env={}, bucket="b", s3_endpoint="ftp://x").check()
    assert excinfo.value.setting == "NETDIFFUSION_S3_ENDPOINT"


def test_flatten_and_numeric_leaves() -> None:
    report = {"similarity": {"overall": {"jsd": 0.25, "hd": None, "n": 3}, "classes": ["a", "b"]},
              "utility": {"tstr": {"micro": {"rf/x": {"accuracy": 0.5, "ok": True}}}}, "nan": float("nan")}
    assert flatten(report)["similarity.classes"] == ["a", "b"]
    leaves = numeric_leaves(report)
    assert leaves == {"similarity.overall.jsd": 0.25, "similarity.overall.n": 3.0,
                      "utility.tstr.micro.rf/x.accuracy": 0.5, "utility.tstr.micro.rf/x.ok": 1.0}
    assert numeric_leaves({"a b(c)": 1}) == {"a b_c_": 1.0}


def test_read_train_metrics_skips_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.9}\nnot json\n{"step": 2, "loss": 0.7, "lr": 0.001}\n\n[1]\n')
    assert read_train_metrics(path) == [(1, {"loss": 0.9}), (2, {"loss": 0.7, "lr": 0.001})]


@pytest.mark.parametrize(
    ("report", "clean"),
    [
        (None, False),
        ({}, False),
        ({"clean": True}, True),
        ({"summary": {"ok": False}}, False),
        ({"summary": {"files": 10, "failed": 0, "errors": 0}}, True),
        ({"summary": {"files": 10, "failed": 1}}, False),
        ({"files": 3}, False),
        # the shape netdiffusion.validate.validate_dir writes
        ({"totals": {"files": 4, "files_ok": 4, "files_failed": 0}, "failed": [], "files": []}, True),
        ({"totals": {"files": 4, "files_ok": 3, "files_failed": 1}, "failed": ["a.pcap"]}, False),
        ({"totals": {"files": 0, "files_ok": 0, "files_failed": 0}, "failed": []}, False),
    ],
)
def test_validation_clean(report: dict | None, clean: bool) -> None:
    assert validation_clean(report) is clean


def test_class_prompts() -> None:
    assert class_prompts({"prompts": {"zoom": "type-0"}}) == {"zoom": "type-0"}
    assert class_prompts({"classes": [{"name": "a", "prompt": "p"}]}) == {"a": "p"}


def test_compare_rules() -> None:
    metrics = parse_metric_specs(None)
    tstr = "utility.train_synthetic_test_real.{}.{}.accuracy"
    base = {"similarity.overall.jsd": 0.30, tstr.format("micro", "rf"): 0.8, tstr.format("macro", "rf"): 0.6,
            "utility.train_synthetic_test_real.micro.rf.balanced_accuracy": 0.1}
    assert metric_value(base, "utility.train_synthetic_test_real.*.*.accuracy") == pytest.approx(0.7)
    better = {**base, "similarity.overall.jsd": 0.20}
    worse_acc = {**better, tstr.format("micro", "rf"): 0.5}
    assert compare(better, base, metrics)[0] is True
    ok, reason, table = compare(worse_acc, base, metrics)
    assert not ok and "worse on utility" in reason and table["similarity.overall.jsd"]["verdict"] == "better"
    assert compare(base, base, metrics)[:2] == (False, "not better on any metric (equal)")
    assert compare(base, None, metrics)[:2] == (True, "no current champion")
    assert compare({"similarity.overall.jsd": 0.1}, base, metrics)[1].startswith("candidate lacks")
    # a pattern compares the mean over the keys both runs logged (QA: a champion evaluated with rf
    # only against a candidate with rf and a weaker dt was judged on different averages)
    rf_only = {"similarity.overall.jsd": 0.30, tstr.format("micro", "rf"): 0.80}
    rf_and_dt = {"similarity.overall.jsd": 0.30, tstr.format("micro", "rf"): 0.82, tstr.format("micro", "dt"): 0.50}
    ok, reason, table = compare(rf_and_dt, rf_only, metrics)
    assert ok and table["utility.train_synthetic_test_real.*.*.accuracy"]["keys_compared"] == 1, (reason, table)
    assert parse_metric_specs(["a.b:max"]) == {"a.b": "max"}
    with pytest.raises(ValueError, match="NAME:min"):
        parse_metric_specs(["a.b"])


@pytest.mark.slow
def test_refresh_to_local_default_store(tiny_model: Path, tmp_path: Path) -> None:
    """No server configured: sqlite ``<out>/mlflow.db`` + ``<out>/mlartifacts``; promote + load work."""
    import mlflow

    from netdiffusion.tracking import load_model_dir, log_refresh, promote

    out = tmp_path / "out"
    settings = TrackingSettings.load(out=out, env={}, experiment="local-test", model_name="local-model")
    settings.check()
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "report.json").write_text(json.dumps({
        "similarity": {"overall": {"jsd": 0.3}, "per_class": {"alpha": {"jsd": 0.2}, "beta": {"jsd": 0.4}}},
        "utility": {"train_synthetic_test_real": {"micro": {"rf": {"accuracy": 0.75}}}},
    }))
    run_id = log_refresh("local", settings=settings, params={"count": 2}, model_dir=tiny_model,
                         validation_report={"summary": {"failed": 0}}, evaluation_dir=evaluation)
    assert (out / "mlflow.db").exists()
    assert any((out / "mlartifacts").rglob("report.json")) and any((out / "mlartifacts").rglob("MLmodel"))
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.metrics["similarity.overall.jsd"] == 0.3
    assert run.data.params["count"] == "2"
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    names = {c.info.run_name for c in children}
    assert {"local/train", "local/validate", "local/evaluate"} <= names
    per_class = client.search_runs([run.info.experiment_id], "tags.`netdiffusion.class` = 'beta'")
    assert per_class and per_class[0].data.metrics["similarity.jsd"] == 0.4
    decision = promote("local-model", run_id=run_id, settings=settings)
    assert decision["promoted"] and decision["champion_after"] == 1
    local = load_model_dir("models:/local-model@champion", tmp_path / "dl")
    assert json.loads((local / "model.json").read_text()) == json.loads((tiny_model / "model.json").read_text())
    # QA: a run on fewer classes replaced a champion that knew more (its metrics were better on its
    # own classes); the service and scheduled runs then lost the others
    fewer = tmp_path / "fewer"
    shutil.copytree(tiny_model, fewer)
    meta = json.loads((fewer / "model.json").read_text())
    dropped = meta["classes"][-1]
    meta["classes"] = meta["classes"][:-1]
    (fewer / "model.json").write_text(json.dumps(meta))
    (evaluation / "report.json").write_text(json.dumps({
        "similarity": {"overall": {"jsd": 0.1}},
        "utility": {"train_synthetic_test_real": {"micro": {"rf": {"accuracy": 0.95}}}}}))
    smaller = log_refresh("local", settings=settings, model_dir=fewer, validation_report={"summary": {"failed": 0}},
                          evaluation_dir=evaluation)
    decision = promote("local-model", run_id=smaller, settings=settings)
    name = dropped if isinstance(dropped, str) else dropped.get("name")
    assert not decision["promoted"] and decision["reason"] == f"knows fewer classes than the champion (missing: {name})"
    assert decision["champion_after"] == 1
