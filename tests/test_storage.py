"""S3 storage helpers and early configuration checks, against a real SeaweedFS S3 server."""

from __future__ import annotations

import boto3
import botocore.exceptions
import numpy as np
import pyarrow.dataset as pads
import pytest

from netdiffusion.tracking import storage
from netdiffusion.tracking.settings import ConfigError, TrackingSettings
from tests.services import S3Server, free_port, isolated_mlflow  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("isolated_mlflow")


def settings_for(s3: S3Server, tmp_path, **overrides) -> TrackingSettings:
    values = dict(s3_endpoint=s3.endpoint, bucket=s3.bucket, access_key=s3.access_key,
                  secret_key=s3.secret_key, region=s3.region, prefix="test-storage")
    values.update(overrides)
    return TrackingSettings.load(env={}, out=tmp_path, **values)


def test_server_enforces_credentials(s3_server: S3Server) -> None:
    wrong = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                         aws_secret_access_key="not-the-secret", region_name=s3_server.region)
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        wrong.list_objects_v2(Bucket=s3_server.bucket)
    assert excinfo.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_upload_download_roundtrip(s3_server: S3Server, tmp_path) -> None:
    settings = settings_for(s3_server, tmp_path)
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "a" / "b" / "deep.bin").write_bytes(bytes(range(256)) * 40)
    uri = settings.s3_uri("roundtrip", "v1")
    assert uri == f"s3://{s3_server.bucket}/test-storage/roundtrip/v1"
    assert storage.upload_dir(src, uri, settings) == 2
    assert storage.list_uri(uri, settings) == ["a/b/deep.bin", "top.txt"]
    back = storage.download_dir(uri, tmp_path / "back", settings)
    assert (back / "a" / "b" / "deep.bin").read_bytes() == (src / "a" / "b" / "deep.bin").read_bytes()
    assert storage.content_hash(back) == storage.content_hash(src)
    # the S3-side hash is stable and changes when an object changes
    first = storage.content_hash(uri, settings)
    assert storage.content_hash(uri, settings) == first
    (src / "top.txt").write_text("changed")
    storage.upload_file(src / "top.txt", storage.join_uri(uri, "top.txt"), settings)
    assert storage.content_hash(uri, settings) != first
    local = storage.localize(uri, tmp_path / "cache", settings)
    assert (local / "top.txt").read_text() == "changed"
    with pytest.raises(FileNotFoundError, match="no objects"):
        storage.download_dir(settings.s3_uri("does-not-exist"), tmp_path / "none", settings)


def test_pyarrow_reads_dataset_from_s3(s3_server: S3Server, tmp_path) -> None:
    from netdiffusion.model.testing import write_synthetic_dataset

    settings = settings_for(s3_server, tmp_path)
    data = write_synthetic_dataset(tmp_path / "data", flows=3)
    uri = storage.publish(data, settings.s3_uri("datasets", "tiny"), settings)
    bucket, key = storage.split_s3_uri(uri)
    table = pads.dataset(f"{bucket}/{key}", filesystem=storage.pyarrow_filesystem(settings),
                         format="parquet", exclude_invalid_files=True).to_table(columns=["label", "flow_id"])
    assert sorted(np.unique(table.column("label").to_numpy(zero_copy_only=False))) == ["alpha", "beta"]


def test_check_accepts_good_settings(s3_server: S3Server, tmp_path) -> None:
    settings_for(s3_server, tmp_path).check()


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"s3_endpoint": "WRONG_ENDPOINT"}, "NETDIFFUSION_S3_ENDPOINT"),
        ({"bucket": "no-such-bucket-here"}, "NETDIFFUSION_S3_BUCKET"),
        ({"secret_key": "wrong-secret"}, "AWS_SECRET_ACCESS_KEY"),
        ({"access_key": "unknown-access-key"}, "AWS_ACCESS_KEY_ID"),
        ({"bucket": ""}, "NETDIFFUSION_S3_BUCKET"),
        ({"tracking_uri": "WRONG_TRACKING"}, "MLFLOW_TRACKING_URI"),
    ],
)
def test_check_names_the_bad_setting(s3_server: S3Server, tmp_path, overrides: dict, setting: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    overrides = {k: (dead if v in ("WRONG_ENDPOINT", "WRONG_TRACKING") else v) for k, v in overrides.items()}
    settings = settings_for(s3_server, tmp_path, **overrides)
    with pytest.raises(ConfigError) as excinfo:
        settings.check(timeout=3)
    assert excinfo.value.setting == setting
    assert str(excinfo.value).startswith(f"{setting}: ")


def test_cli_reports_bad_setting(s3_server: S3Server, tmp_path, monkeypatch, capsys) -> None:
    from netdiffusion.cli import main

    for key, value in {**s3_server.env(), "NETDIFFUSION_S3_BUCKET": "missing-bucket"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").touch()  # the default store exists (promote needs one): only S3 is wrong
    rc = main(["promote", "--model", "x", "--version", "1", "--out", str(tmp_path)])
    assert rc == 2
    assert "NETDIFFUSION_S3_BUCKET: bucket 'missing-bucket' does not exist" in capsys.readouterr().out


def test_load_model_dir_from_s3_copy(s3_server: S3Server, tmp_path) -> None:
    from netdiffusion.tracking.model import load_model_dir

    settings = settings_for(s3_server, tmp_path)
    model = tmp_path / "model"
    (model / "weights").mkdir(parents=True)
    (model / "model.json").write_text('{"backend": "native", "classes": ["a"]}')
    (model / "weights" / "w.bin").write_bytes(b"\x00" * 64)
    uri = storage.publish(model, settings.s3_uri("models", "m1"), settings)
    local = load_model_dir(uri, tmp_path / "dl", settings=settings)
    assert (local / "model.json").read_text() == (model / "model.json").read_text()
    assert (local / "weights" / "w.bin").stat().st_size == 64
    assert load_model_dir(model) == model
    with pytest.raises(FileNotFoundError, match="no model.json"):
        load_model_dir(tmp_path / "dl" / "weights")


def test_local_tracking_with_s3_artifacts(s3_server: S3Server, tmp_path, monkeypatch) -> None:
    """sqlite tracking + a bucket: the experiment's artifacts go straight to S3 (client-side boto3)."""
    import json

    from netdiffusion.tracking import log_refresh

    for key, value in s3_server.env().items():  # restored after the test: apply_env() exports these
        monkeypatch.setenv(key, value)
    settings = settings_for(s3_server, tmp_path, experiment="local-s3", prefix="local-s3")
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "report.json").write_text(json.dumps({"similarity": {"overall": {"jsd": 0.5}}}))
    run_id = log_refresh("local-s3", settings=settings, evaluation_dir=evaluation,
                         validation_report={"totals": {"files": 1, "files_failed": 0}, "failed": []})
    keys = storage.list_uri(settings.s3_uri("mlartifacts"), settings)
    assert f"{run_id}/artifacts/evaluation/report.json" in keys
    assert f"{run_id}/artifacts/validate/report.json" in keys
    assert (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()
