"""The service backed by a real MLflow registry and S3 (SeaweedFS): /v1/models shows aliases,
versions and evaluation numbers, jobs pick a version by alias, results are published as S3 URIs."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from netdiffusion.serve.loadtest import run_server

TOKEN = "registry-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL_NAME = "serve-test"


@pytest.fixture(scope="module")
def registered(mlflow_server, tiny_model: Path) -> dict[str, str]:
    """The tiny model registered twice (v1 with eval metrics and alias champion, v2 challenger)."""
    import mlflow

    from netdiffusion.tracking import log_model

    env = {**mlflow_server.s3.env(), "MLFLOW_TRACKING_URI": mlflow_server.url}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mlflow.set_tracking_uri(mlflow_server.url)
        client = mlflow.MlflowClient(mlflow_server.url)
        with mlflow.start_run(run_name="serve-registry-test"):
            mlflow.log_metrics({"jsd_mean": 0.125, "utility_macro_f1": 0.8})
            v1 = log_model(tiny_model, registered_model_name=MODEL_NAME)["version"]
        v2 = log_model(tiny_model, registered_model_name=MODEL_NAME)["version"]
        client.set_registered_model_alias(MODEL_NAME, "champion", v1)
        client.set_registered_model_alias(MODEL_NAME, "challenger", v2)
    return env


@pytest.mark.slow
def test_registry_models_and_s3_results(registered: dict[str, str], mlflow_server, tiny_model: Path,
                                        tmp_path: Path) -> None:
    from netdiffusion.tracking.storage import list_uri

    results = f"s3://{mlflow_server.s3.bucket}/serve-results"
    env = {**registered, "NETDIFFUSION_SERVE_S3_URI": results, "NETDIFFUSION_SERVE_WORKERS": "1",
           "NETDIFFUSION_SERVE_JOB_THREADS": "1"}
    with run_server(tmp_path / "state", f"models:/{MODEL_NAME}@champion", [TOKEN], env=env) as srv:
        models = httpx.get(f"{srv.url}/v1/models", headers=AUTH, timeout=60).json()["models"]
        assert models[0]["name"] == MODEL_NAME and set(models[0]["aliases"]) == {"champion", "challenger"}
        by_version = {v["version"]: v for v in models[0]["versions"]}
        assert by_version["1"]["aliases"] == ["champion"] and by_version["2"]["aliases"] == ["challenger"]
        assert by_version["1"]["metrics"]["jsd_mean"] == pytest.approx(0.125)
        classes = httpx.get(f"{srv.url}/v1/classes", headers=AUTH, timeout=60).json()["classes"]
        assert len(classes) >= 2
        missing = httpx.post(f"{srv.url}/v1/jobs", json={"classes": classes[:1], "count": 1, "model": "99"},
                             headers=AUTH, timeout=60)
        assert missing.status_code == 404, missing.text
        r = httpx.post(f"{srv.url}/v1/jobs", json={"classes": classes[:1], "count": 1, "packets": 4,
                                                   "format": "parquet", "model": "challenger"},
                       headers=AUTH, timeout=60)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 180
        while (job := httpx.get(f"{srv.url}/v1/jobs/{job_id}", headers=AUTH).json())["status"] not in (
                "succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "succeeded", job["error"]
        uris = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result?archive=uris", headers=AUTH).json()["uris"]
        assert uris["archive"] == f"{results}/{job_id}/{job_id}.zip"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in registered.items():
            mp.setenv(key, value)
        stored = list_uri(uris["prefix"])
    assert any(u.endswith(".parquet") for u in stored), stored
