"""Service and pipeline-submission hardening, against real processes on loopback.

* request bodies: a chunked body is cut off at the limit (413) without being buffered;
* Kubeflow Pipelines calls are bounded: a host that accepts connections but never answers (a real
  "black hole" listener) fails the CLI in seconds and never blocks the service's request path;
* restart recovery: queued pipeline jobs go back to KFP (never run locally); a second ``serve`` on
  a state dir that a live one owns, or on a port in use, exits before touching any job;
* the registry model cache survives concurrent cold downloads (real SQLite MLflow store);
* bad model references from clients are 4xx, missing tracking settings are named, not papered over
  with an empty new store;
* ``submit``/``schedule`` count validation and ``--namespace`` / ``KFP_NAMESPACE``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from netdiffusion.serve.loadtest import free_port, run_server
from netdiffusion.serve.store import QUEUED, RUNNING, JobStore
from tests.fake_kfp import FakeKFP, posts, serve_fake_kfp
from tests.services import isolated_mlflow, mlflow_state_restored  # noqa: F401 (fixture)
from tests.test_serve import AUTH, BASE_ENV, TOKENS, model_classes
from tests.test_serve_pipeline import PLACEMENT_ENV, get_job, wait_for

# MLflow keeps process-global state (URIs, active experiment, env): undone after every test here
pytestmark = pytest.mark.usefixtures("isolated_mlflow")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    with run_server(tmp_path_factory.mktemp("serve-hardening"), tiny_model, TOKENS, env=BASE_ENV) as srv:
        yield srv


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers (a hung KFP API)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        listener.close()


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "netdiffusion", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


# -- 1. request body limit ----------------------------------------------------------------------
def test_chunked_body_is_cut_off_at_the_limit_before_auth(server) -> None:
    """No Content-Length: the limit applies to the bytes as they stream in (413 long before
    8 MiB are sent), and before authentication (no token here: still 413, not 401)."""
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 16384
    sent, answer = 0, b""
    try:
        while sent < 8 << 20:  # paced, so that "sent" is about what the server read, not socket buffers
            if select.select([sock], [], [], 0.01)[0]:
                break
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except OSError:  # the server closed the connection after answering
                break
            sent += len(chunk)
        sock.settimeout(10)
        while not answer.endswith(b"}") and (data := sock.recv(65536)):
            answer += data
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 1 << 20, f"{sent} bytes were accepted before the 413"
    assert b"limit" in answer
    assert httpx.get(f"{server.url}/healthz").status_code == 200


# -- 2. KFP timeouts ----------------------------------------------------------------------------
def test_submit_to_a_hung_kfp_host_fails_in_seconds(blackhole: str) -> None:
    started = time.monotonic()
    proc = cli("submit", "--host", blackhole, "--count", "5", "--kfp-timeout", "1")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 1 s" in lines[0], proc.stderr
    assert time.monotonic() - started < 30


def test_schedule_timeout_comes_from_env(blackhole: str) -> None:
    proc = cli("schedule", "--host", blackhole, "--input", "s3://data/x",
               env={"NETDIFFUSION_KFP_TIMEOUT_S": "1"})
    assert proc.returncode == 1 and "did not answer within 1 s" in proc.stderr, (proc.stdout, proc.stderr)


def test_hung_kfp_host_never_blocks_the_service(tiny_model: Path, tmp_path: Path, blackhole: str) -> None:
    """Large jobs are accepted at once (queued) and submitted in the background; a KFP host that
    never answers fails them with the reason, while /healthz and the job API keep answering."""
    env = {**BASE_ENV, **PLACEMENT_ENV, "KFP_HOST": blackhole, "NETDIFFUSION_SERVE_KFP_TIMEOUT_S": "1",
           "NETDIFFUSION_SERVE_PIPELINE_POLL_S": "0.2"}
    classes = model_classes(tiny_model)[:3]
    body = {"classes": classes, "count": 40}
    with run_server(tmp_path / "state", tiny_model, TOKENS, env=env) as srv:
        def post(_: int) -> httpx.Response:
            return httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH, timeout=10)

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(post, range(12)))
        for r in answers:
            assert r.status_code == 202, r.text
            assert r.json()["target"] == "pipeline" and r.json()["status"] == "queued", r.json()
        health = httpx.get(f"{srv.url}/healthz", timeout=2)
        assert health.status_code == 200
        assert httpx.get(f"{srv.url}/v1/jobs", headers=AUTH, timeout=2).status_code == 200
        job = wait_for("the first job to fail", lambda: (j := get_job(srv.url, answers[0].json()["id"]))[
            "status"] == "failed" and j, timeout_s=60)
        assert job["error"].startswith("pipeline submission failed: ") and "did not answer within 1 s" in \
            job["error"], job["error"]


# -- 3. restart recovery ------------------------------------------------------------------------
def test_queued_pipeline_job_is_resubmitted_to_kfp_after_restart(tiny_model: Path, tmp_path: Path) -> None:
    """A pipeline job still queued when the service stopped goes to KFP on restart, never to the
    local worker pool (which would bypass local_max_flows)."""
    state = tmp_path / "state"
    classes = model_classes(tiny_model)[:3]
    info = json.loads((tiny_model / "model.json").read_text())
    record = {"classes": classes, "count": 40, "packets": None, "format": "pcap", "model": None, "seed": 3,
              "model_ref": str(tiny_model), "model_packets": info.get("packets"), "target": "pipeline"}
    job_id, _ = JobStore(state / "jobs.db").create_within_quota(
        "x", record, 120, window_s=3600, max_jobs=10, max_flows=10_000)
    token_id = __import__("netdiffusion.serve.auth", fromlist=["TokenStore"]).TokenStore(TOKENS).identify(TOKENS[0])
    JobStore(state / "jobs.db").update(job_id, token_id=token_id)
    with serve_fake_kfp() as kfp_url:
        FakeKFP.default_run = {"state": "RUNNING"}
        env = {**BASE_ENV, **PLACEMENT_ENV, "KFP_HOST": kfp_url, "NETDIFFUSION_SERVE_PIPELINE_POLL_S": "0.2"}
        with run_server(state, tiny_model, TOKENS, env=env) as srv:
            job = wait_for("the job to be submitted", lambda: (j := get_job(srv.url, job_id))["status"] not in (
                QUEUED, RUNNING) and j)
            assert job["status"] == "submitted", job
            assert job["result"]["pipeline_run_id"].startswith("run-")
            (run,) = [p for p in posts("/runs") if p["body"]["display_name"] == f"serve-{job_id}"]
            assert run["body"]["runtime_config"]["parameters"]["count"] == 40
            assert not (state / "jobs" / job_id).exists()  # no local job process ever ran it


def _running_job(state: Path) -> str:
    store = JobStore(state / "jobs.db")
    job_id = store.create("t", {"classes": ["x"], "count": 1, "target": "local"}, 1)
    assert store.claim(job_id, socket.gethostname())  # running on this host, beating
    return job_id


def test_second_instance_cannot_take_over_a_live_state_dir(tiny_model: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with run_server(state, tiny_model, TOKENS, env=BASE_ENV) as first:
        job_id = _running_job(state)
        port = first.url.rsplit(":", 1)[1]
        proc = cli("serve", "--port", port, "--state-dir", str(state), "--model", str(tiny_model),
                   env={**BASE_ENV, "NETDIFFUSION_API_TOKENS": TOKENS[0]})
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert f"is in use by pid {first.proc.pid}" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
        assert JobStore(state / "jobs.db").get(job_id)["status"] == RUNNING
        # a port in use is found before recovery touches the (other) state dir's jobs
        other = tmp_path / "other"
        other_job = _running_job(other)
        proc = cli("serve", "--port", port, "--state-dir", str(other), "--model", str(tiny_model),
                   env={**BASE_ENV, "NETDIFFUSION_API_TOKENS": TOKENS[0]})
        assert proc.returncode == 2 and "address already in use" in (proc.stdout + proc.stderr).lower(), \
            (proc.stdout, proc.stderr)
        assert JobStore(other / "jobs.db").get(other_job)["status"] == RUNNING
        assert httpx.get(f"{first.url}/healthz").status_code == 200


def test_runner_refuses_pipeline_jobs(tmp_path: Path) -> None:
    from netdiffusion.serve.runner import run_job

    store = JobStore(tmp_path / "jobs.db")
    job_id = store.create("t", {"classes": ["x"], "count": 5000, "target": "pipeline", "model_ref": "m"}, 5000)
    with pytest.raises(RuntimeError, match="pipeline"):
        run_job(tmp_path, job_id)


# -- 4./5. registry models --------------------------------------------------------------------------
MODEL_NAME = "hardening"


@pytest.fixture(scope="module")
def sqlite_registry(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite MLflow store with the tiny model as v1 (champion) and v2 (challenger)."""
    import mlflow

    from netdiffusion.tracking import log_model
    from netdiffusion.tracking.runs import configure
    from netdiffusion.tracking.settings import TrackingSettings

    out = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    # restored afterwards: a later test's mlflow.start_run() must not reuse this store's experiment
    with pytest.MonkeyPatch.context() as mp, mlflow_state_restored(mp):
        configure(TrackingSettings.load(out=out, env={}, tracking_uri=uri))
        v1 = log_model(tiny_model, registered_model_name=MODEL_NAME)["version"]
        v2 = log_model(tiny_model, registered_model_name=MODEL_NAME)["version"]
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(MODEL_NAME, "champion", v1)
        client.set_registered_model_alias(MODEL_NAME, "challenger", v2)
    return uri


def test_concurrent_cold_downloads_share_the_cache(sqlite_registry: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from netdiffusion.serve.models import ModelSource

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_registry)
    mlflow.set_tracking_uri(sqlite_registry)
    try:
        ref = f"models:/{MODEL_NAME}@challenger"
        sources = [ModelSource(ref, cache_dir=tmp_path / "models") for _ in range(10)]  # like 10 job processes
        barrier = threading.Barrier(10)

        def fetch(source: ModelSource) -> Path:
            barrier.wait()
            return source.local_dir(ref)

        with ThreadPoolExecutor(10) as pool:
            dirs = list(pool.map(fetch, sources))
        for d in dirs:
            assert (d / "model.json").exists(), d
        assert {json.loads((d / "model.json").read_text())["classes"][0] for d in dirs}
        leftovers = [p.name for p in (tmp_path / "models").iterdir() if ".tmp" in p.name or p.name.startswith(".")]
        assert not [n for n in leftovers if not n.endswith(".lock")], leftovers
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_a_registry_version_is_downloaded_once_and_an_alias_follows_its_version(
        sqlite_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every job downloaded its model again (aliases move), a few GB per job for SD weights. An
    alias is now resolved to its version and each version's copy is kept (versions never change);
    moving the alias moves jobs to the other version's copy at once."""
    import mlflow

    from netdiffusion.serve.models import ModelSource

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_registry)
    mlflow.set_tracking_uri(sqlite_registry)
    try:
        source = ModelSource(f"models:/{MODEL_NAME}@champion", cache_dir=tmp_path / "models")
        first = source.local_dir(f"models:/{MODEL_NAME}@challenger")
        inode = (first / "model.json").stat().st_ino
        again = source.local_dir(f"models:/{MODEL_NAME}@challenger")
        assert again == first and (again / "model.json").stat().st_ino == inode  # not downloaded again
        challenger = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "challenger").version
        assert source.local_dir(f"models:/{MODEL_NAME}/{challenger}") == first  # the same version
        champion = source.local_dir(f"models:/{MODEL_NAME}@champion")
        assert champion != first and (champion / "model.json").exists()
        mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "challenger", "1")
        try:
            assert source.local_dir(f"models:/{MODEL_NAME}@challenger") == champion  # follows the alias
        finally:
            mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "challenger", challenger)
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_bad_model_references_are_client_errors(sqlite_registry: str, tiny_model: Path, tmp_path: Path) -> None:
    env = {**BASE_ENV, "MLFLOW_TRACKING_URI": sqlite_registry}
    cls = model_classes(tiny_model)[0]
    with run_server(tmp_path / "state", f"models:/{MODEL_NAME}@champion", TOKENS, env=env) as srv:
        def classes(model: str) -> httpx.Response:
            return httpx.get(f"{srv.url}/v1/classes", params={"model": model}, headers=AUTH, timeout=60)

        assert classes("challenger").status_code == 200
        for bad in (f"models:/{MODEL_NAME}/../x", f"models:/{MODEL_NAME}/", f"models:/{MODEL_NAME}@",
                    f"models:/{MODEL_NAME}/1/2", f"models:/{MODEL_NAME}/Production", "bad/../ref"):
            r = classes(bad)
            assert r.status_code == 422 and "retry-after" not in r.headers, (bad, r.status_code, r.text)
        for missing in (f"models:/{MODEL_NAME}/99", f"models:/{MODEL_NAME}@nosuchalias", "99", "nosuchalias",
                        "models:/othermodel@champion"):
            r = classes(missing)
            assert r.status_code == 404 and "retry-after" not in r.headers, (missing, r.status_code, r.text)
        job = httpx.post(f"{srv.url}/v1/jobs", json={"classes": [cls], "count": 1,
                                                     "model": f"models:/{MODEL_NAME}/Production"},
                         headers=AUTH, timeout=60)
        assert job.status_code == 422 and "stages are not supported" in job.json()["error"], job.text
        assert 'status="503"' not in httpx.get(f"{srv.url}/metrics").text


# -- 6. missing tracking settings ---------------------------------------------------------------------
def _without_tracking_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def test_registry_model_without_tracking_uri_is_a_clear_error(tmp_path: Path) -> None:
    env = {**_without_tracking_env(), "PYTHONPATH": str(REPO), "NETDIFFUSION_API_TOKENS": TOKENS[0]}
    proc = subprocess.run([sys.executable, "-m", "netdiffusion", "serve", "--port", str(free_port()),
                           "--state-dir", str(tmp_path / "state"), "--model", "models:/netdiffusion@champion"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "MLFLOW_TRACKING_URI" in proc.stdout, proc.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


def test_promote_without_a_store_does_not_create_one(tmp_path: Path) -> None:
    out = tmp_path / "nonexistent"
    env = {**_without_tracking_env(), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "netdiffusion", "promote", "--model", "netdiffusion",
                           "--version", "1", "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "MLFLOW_TRACKING_URI" in proc.stdout and "no tracking store at" in proc.stdout, proc.stdout
    assert not out.exists()


def test_load_model_dir_without_tracking_uri_names_the_setting(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    from netdiffusion.tracking.model import load_model_dir
    from netdiffusion.tracking.settings import ConfigError

    for var in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(var)
    mlflow.set_tracking_uri(None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        load_model_dir("models:/netdiffusion@champion", tmp_path / "dst")
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


# -- 7. submit / schedule arguments ------------------------------------------------------------------
@pytest.mark.parametrize("args", [["submit", "--count", "0"], ["submit", "--count", "-3"],
                                  ["submit", "--host", "http://127.0.0.1:9", "--count", "0"],
                                  ["schedule", "--host", "http://127.0.0.1:9", "--count", "0"]])
def test_count_must_be_positive(args: list[str], tmp_path: Path) -> None:
    proc = cli(*args, "--out", str(tmp_path / "out")) if args[0] == "submit" else cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    output = (proc.stdout + proc.stderr).strip()
    assert "--count" in output and ">= 1" in output, output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--count", "0"], ["--count", "-1"], ["--packets", "0"]])
def test_run_refuses_counts_below_one(args: list[str], tmp_path: Path) -> None:
    """`make run COUNT=0` used to run with the preset's count and COUNT=-1 to fail only after training."""
    proc = cli("run", "--preset", "tiny", "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert f"{args[0]} must be >= 1" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_pipeline_arguments_validate_count() -> None:
    from pipelines.submit import pipeline_arguments

    with pytest.raises(SystemExit, match=">= 1"):
        pipeline_arguments("generate", classes=["a"], count=0)


def test_namespace_flag_and_env_reach_kfp(monkeypatch: pytest.MonkeyPatch) -> None:
    from netdiffusion.cli import main as cli_main

    with serve_fake_kfp() as url:
        monkeypatch.setenv("KFP_NAMESPACE", "team-env")
        assert cli_main(["submit", "--host", url, "--count", "5"]) == 0
        assert posts("/experiments")[-1]["body"]["namespace"] == "team-env"
        assert cli_main(["submit", "--host", url, "--count", "5", "--namespace", "team-flag"]) == 0
        assert posts("/experiments")[-1]["body"]["namespace"] == "team-flag"
        assert cli_main(["schedule", "--host", url, "--input", "s3://d/x"]) == 0
        assert posts("/experiments")[-1]["body"]["namespace"] == "team-env"


# -- 8. error messages ---------------------------------------------------------------------------------
def test_body_error_messages_say_what_to_fix(server, tiny_model: Path) -> None:
    bad = httpx.post(f"{server.url}/v1/jobs", content=b'{"classes": ["a"], "count": 1,,}',
                     headers={**AUTH, "Content-Type": "application/json"})
    assert bad.status_code == 422 and "invalid JSON at byte 30" in bad.json()["error"], bad.text
    form = httpx.post(f"{server.url}/v1/jobs", content=b'{"classes": ["a"], "count": 1}',
                      headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422 and "Content-Type: application/json" in form.json()["error"], form.text


def test_the_model_cache_keeps_the_most_recently_used_versions_and_any_in_use(
        sqlite_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each registry version is downloaded once and kept; a champion alias a weekly refresh moves
    grew the state volume by a model per refresh. Beyond ``keep_versions`` the least recently used
    copies are removed, never one a job holds (``ModelSource.use``) nor the one just asked for."""
    import mlflow

    from netdiffusion.serve.models import ModelSource

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_registry)
    mlflow.set_tracking_uri(sqlite_registry)
    try:
        source = ModelSource(f"models:/{MODEL_NAME}@champion", cache_dir=tmp_path / "models", keep_versions=1)
        with source.use(f"models:/{MODEL_NAME}@challenger") as in_use:
            champion = source.local_dir(f"models:/{MODEL_NAME}@champion")  # over the limit, but in use
            assert (in_use / "model.json").exists() and (champion / "model.json").exists()
            assert in_use != champion
        inode = (in_use / "model.json").stat().st_ino
        again = source.local_dir(f"models:/{MODEL_NAME}@challenger")  # the most recent now
        assert again == in_use and (again / "model.json").stat().st_ino == inode  # kept, not downloaded again
        assert not champion.exists()  # least recently used, nobody holds it: removed
        assert len(list((tmp_path / "models").glob("*.fetched"))) == 1
        assert (source.local_dir(f"models:/{MODEL_NAME}@champion") / "model.json").exists()  # fetched again
        assert not in_use.exists()
        everything = ModelSource(f"models:/{MODEL_NAME}@champion", cache_dir=tmp_path / "models", keep_versions=0)
        everything.local_dir(f"models:/{MODEL_NAME}@challenger")
        assert len(list((tmp_path / "models").glob("*.fetched"))) == 2  # 0: keep all
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
