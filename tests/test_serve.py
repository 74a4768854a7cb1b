"""The synthetic data service against a real ``netdiffusion serve`` process on loopback.

Covers auth (401/403), request validation (4xx, never 5xx), quotas (429), a real small job with
the tiny model, restart persistence, and a short bounded load test (no errors).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.serve.loadtest import load_test, run_server

TOKENS = ["alpha-token-0123456789", "beta-token-9876543210"]
AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}
AUTH_B = {"Authorization": f"Bearer {TOKENS[1]}"}
# jobs in these tests stay tiny; one job process at a time on the 2-core CI machine
BASE_ENV = {"NETDIFFUSION_SERVE_WORKERS": "1", "NETDIFFUSION_SERVE_JOB_THREADS": "1",
            "NETDIFFUSION_SERVE_MAX_COUNT": "50", "NETDIFFUSION_SERVE_MAX_CLASSES": "4",
            "NETDIFFUSION_SERVE_MAX_PACKETS": "64", "NETDIFFUSION_SERVE_LOCAL_MAX_FLOWS": "100"}


def model_classes(model: Path) -> list[str]:
    return list(json.loads((model / "model.json").read_text())["classes"])


def wait_job(url: str, job_id: str, timeout_s: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} not finished after {timeout_s:g} s: {job}")


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {**BASE_ENV, "NETDIFFUSION_SERVE_QUOTA_JOBS": "1000", "NETDIFFUSION_SERVE_QUOTA_FLOWS": "100000"}
    with run_server(tmp_path_factory.mktemp("serve-state"), tiny_model, TOKENS, env=env) as srv:
        yield srv


def test_probes_metrics_and_openapi_need_no_token(server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert all(ready.json()["checks"].values()) and ready.json()["model"] == "ok"
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/classes", "/v1/models", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"):
        assert path in spec["paths"], path
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics").text
    assert "netdiffusion_http_requests_total" in metrics and "netdiffusion_jobs{" in metrics


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/classes"), ("GET", "/v1/models"),
                                              ("POST", "/v1/jobs"), ("GET", "/v1/jobs/abc"),
                                              ("GET", "/v1/jobs/abc/result"), ("GET", "/v1/jobs")])
def test_auth_required(server, method: str, path: str) -> None:
    body = {"classes": ["zoom"], "count": 1}
    missing = httpx.request(method, f"{server.url}{path}", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.request(method, f"{server.url}{path}", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    almost = httpx.request(method, f"{server.url}{path}", json=body,
                           headers={"Authorization": f"Bearer {TOKENS[0][:-1]}"})
    assert almost.status_code == 403
    basic = httpx.request(method, f"{server.url}{path}", json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


def test_catalogue(server, tiny_model: Path) -> None:
    classes = httpx.get(f"{server.url}/v1/classes", headers=AUTH).json()
    assert classes["classes"] == model_classes(tiny_model)
    models = httpx.get(f"{server.url}/v1/models", headers=AUTH).json()["models"]
    assert models[0]["versions"][0]["aliases"] == ["champion"]
    assert models[0]["versions"][0]["classes"] == model_classes(tiny_model)


def test_malformed_requests_get_4xx_with_a_message(server, tiny_model: Path) -> None:
    cls = model_classes(tiny_model)[0]
    raw_bodies = [b"", b"not json", b"{\"classes\": [", b"[]", b"null", b"\xff\xfe"]
    json_bodies = [
        {}, {"count": 1}, {"classes": [], "count": 1}, {"classes": cls, "count": 1},
        {"classes": [cls], "count": 0}, {"classes": [cls], "count": -5}, {"classes": [cls], "count": "ten"},
        {"classes": [cls], "count": 1.5}, {"classes": [cls], "count": 10**30}, {"classes": [cls], "count": 51},
        {"classes": [cls], "count": 1, "packets": 0}, {"classes": [cls], "count": 1, "packets": 65},
        {"classes": [cls], "count": 1, "format": "exe"}, {"classes": [cls], "count": 1, "colour": "red"},
        {"classes": ["no-such-class"], "count": 1}, {"classes": [cls, cls], "count": 1},
        {"classes": [cls] * 5, "count": 1}, {"classes": [1, 2], "count": 1}, {"classes": [""], "count": 1},
        {"classes": [cls], "count": 1, "model": "v999"}, {"classes": [cls], "count": 1, "model": "../etc"},
        {"classes": [cls], "count": 1, "seed": -1}, {"classes": model_classes(tiny_model)[:3], "count": 50},
    ]
    seen = set()
    for body in raw_bodies + json_bodies:
        if isinstance(body, bytes):
            r = httpx.post(f"{server.url}/v1/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
        else:
            r = httpx.post(f"{server.url}/v1/jobs", json=body, headers=AUTH)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert r.json()["error"], body
        seen.add(r.status_code)
    assert {413, 422} <= seen  # 3 classes x 50 flows is above local_max_flows (100) without KFP: 413
    huge = httpx.post(f"{server.url}/v1/jobs", content=b"{" + b" " * 100_000 + b"}",
                      headers={**AUTH, "Content-Type": "application/json"})
    assert huge.status_code == 413
    for path in ("/v1/jobs/" + "x" * 500, "/v1/jobs/nope/result", "/v1/jobs?limit=abc", "/v1/jobs?limit=0",
                 "/v1/jobs/nope/result?archive=rar", "/v1/classes?model=nope"):
        r = httpx.get(f"{server.url}{path}", headers=AUTH)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    assert "netdiffusion_http_requests_total" in httpx.get(f"{server.url}/metrics").text
    assert 'status="500"' not in httpx.get(f"{server.url}/metrics").text


def test_jobs_are_private_to_their_token(server, tiny_model: Path) -> None:
    cls = model_classes(tiny_model)[0]
    r = httpx.post(f"{server.url}/v1/jobs", json={"classes": [cls], "count": 1, "packets": 4, "format": "parquet"},
                   headers=AUTH)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH_B).status_code == 404
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}/result", headers=AUTH_B).status_code == 404
    assert job_id in [j["id"] for j in httpx.get(f"{server.url}/v1/jobs", headers=AUTH).json()]
    assert job_id not in [j["id"] for j in httpx.get(f"{server.url}/v1/jobs", headers=AUTH_B).json()]


def test_logs_are_json_lines_without_tokens(server) -> None:
    httpx.get(f"{server.url}/v1/classes", headers={**AUTH, "X-Request-Id": "trace-me-123"})
    time.sleep(0.2)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    requests = [e for e in lines if e.get("message") == "request"]
    assert any(e["request_id"] == "trace-me-123" and e["status"] == 200 and e["token_id"] for e in requests)
    assert all({"time", "level", "logger"} <= set(e) for e in lines)
    assert TOKENS[0] not in server.log() and TOKENS[1] not in server.log()


def test_without_a_model_the_service_is_ready_and_says_why(tmp_path: Path) -> None:
    with run_server(tmp_path / "state", tmp_path / "no-model-yet", TOKENS, env=BASE_ENV) as srv:
        ready = httpx.get(f"{srv.url}/readyz")
        assert ready.status_code == 200 and "not a model directory" in ready.json()["model"]
        classes = httpx.get(f"{srv.url}/v1/classes", headers=AUTH)
        assert classes.status_code == 404 and "not a model directory" in classes.json()["error"]
        job = httpx.post(f"{srv.url}/v1/jobs", json={"classes": ["zoom"], "count": 1}, headers=AUTH)
        assert job.status_code == 404 and "not a model directory" in job.json()["error"]


def test_quotas_per_token(tiny_model: Path, tmp_path: Path) -> None:
    env = {**BASE_ENV, "NETDIFFUSION_SERVE_QUOTA_JOBS": "3", "NETDIFFUSION_SERVE_QUOTA_FLOWS": "40",
           "NETDIFFUSION_SERVE_WORKERS": "1"}
    cls = model_classes(tiny_model)[0]
    body = {"classes": [cls], "count": 2, "packets": 4, "format": "parquet"}
    with run_server(tmp_path / "state", tiny_model, TOKENS, env=env) as srv:
        codes = [httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH).status_code for _ in range(3)]
        assert codes == [202, 202, 202]
        over = httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH)
        assert over.status_code == 429 and "job quota" in over.json()["error"]
        assert int(over.headers["retry-after"]) > 0
        # the other token has its own quota; its flow quota (40) stops a 45-flow request
        big = httpx.post(f"{srv.url}/v1/jobs", json={**body, "count": 45}, headers=AUTH_B)
        assert big.status_code == 429 and "flow quota" in big.json()["error"]
        assert httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH_B).status_code == 202
        assert 'netdiffusion_jobs_rejected_total{reason="quota"} 2.0' in httpx.get(f"{srv.url}/metrics").text


@pytest.mark.slow
def test_real_job_then_restart_keeps_state(tiny_model: Path, tmp_path: Path) -> None:
    """A small job generates a real dataset; after a restart it is still there and downloadable,
    and a job that was running when the service stopped is failed with the reason."""
    state = tmp_path / "state"
    classes = model_classes(tiny_model)[:2]
    body = {"classes": classes, "count": 2, "packets": 8, "format": "parquet", "seed": 7}
    with run_server(state, tiny_model, TOKENS, env=BASE_ENV) as srv:
        r = httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = wait_job(srv.url, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["progress"] == 1.0 and job["result"]["files"] >= 2
        archive = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH)
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        # a job that is still running when the service stops
        slow = httpx.post(f"{srv.url}/v1/jobs", json={**body, "count": 20, "classes": classes[:1]}, headers=AUTH)
        slow_id = slow.json()["id"]
        deadline = time.monotonic() + 60
        while httpx.get(f"{srv.url}/v1/jobs/{slow_id}", headers=AUTH).json()["status"] != "running":
            assert time.monotonic() < deadline, "second job never started"
            time.sleep(0.2)

    extract = tmp_path / "result"
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(extract)
    packets = read_packets(extract / "dataset")
    assert set(packets.label) == set(classes)
    assert len(set(packets.flow_id)) == 4 and packets.packet_index.max() < 8
    assert packets.nprint.shape[1] == len(read_layout(extract / "dataset").columns)
    assert set(map(int, set(packets.nprint.ravel().tolist()))) <= {-1, 0, 1}

    with run_server(state, tiny_model, TOKENS, env=BASE_ENV) as srv:
        again = httpx.get(f"{srv.url}/v1/jobs/{job_id}", headers=AUTH).json()
        assert again["status"] == "succeeded" and again["result"] == job["result"]
        assert httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH).content == archive.content
        tar = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result?archive=tar", headers=AUTH)
        assert tar.status_code == 200 and tar.headers["content-type"] == "application/x-tar"
        interrupted = httpx.get(f"{srv.url}/v1/jobs/{slow_id}", headers=AUTH).json()
        assert interrupted["status"] == "failed"
        assert "restart" in interrupted["error"] or "shut down" in interrupted["error"]
        failed_result = httpx.get(f"{srv.url}/v1/jobs/{slow_id}/result", headers=AUTH)
        assert failed_result.status_code == 409 and "failed" in failed_result.json()["error"]


def _wait_status(url: str, job_id: str, statuses: tuple[str, ...], timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while (job := httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=10).json())["status"] not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} never became {statuses}: {job}"
        time.sleep(0.1)
    return job


@pytest.mark.slow
def test_cancel_delete_and_result_retention(tiny_model: Path, tmp_path: Path) -> None:
    """DELETE cancels a running job (its process stops, its files go, the pool goes on) and a queued
    one (it never runs); DELETE of an ended job removes its stored result (410 after); results older
    than NETDIFFUSION_SERVE_RESULT_RETENTION_S are removed by the service itself."""
    state = tmp_path / "state"
    classes = model_classes(tiny_model)[:2]
    slow = {"classes": classes[:1], "count": 20, "packets": 8, "format": "parquet", "seed": 3}
    small = {"classes": classes, "count": 2, "packets": 8, "format": "parquet", "seed": 4}
    env = {**BASE_ENV, "NETDIFFUSION_SERVE_RESULT_RETENTION_S": "5"}

    def post(body: dict) -> str:
        r = httpx.post(f"{srv.url}/v1/jobs", json=body, headers=AUTH, timeout=30)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def delete(job_id: str, headers: dict = AUTH) -> httpx.Response:
        return httpx.delete(f"{srv.url}/v1/jobs/{job_id}", headers=headers, timeout=30)

    def result(job_id: str) -> httpx.Response:
        return httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH, timeout=30)

    with run_server(state, tiny_model, TOKENS, env=env) as srv:
        running_id, queued_id = post(slow), post(slow)  # one worker: the second waits
        _wait_status(srv.url, running_id, ("running",))
        assert delete(queued_id, AUTH_B).status_code == 404  # another token's job
        cancelled = delete(queued_id)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        assert cancelled.json()["error"] == "cancelled by its owner"
        cancelled = delete(running_id)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
        deadline = time.monotonic() + 30
        while (state / "jobs" / running_id).exists():  # the process ended, what it made is removed
            assert time.monotonic() < deadline, "the cancelled job's files were not removed"
            time.sleep(0.2)
        assert result(running_id).status_code == 409 and "cancelled" in result(running_id).json()["error"]

        done_id = post(small)  # the pool goes on; the cancelled queued job never runs
        done = _wait_status(srv.url, done_id, ("succeeded", "failed"))
        assert done["status"] == "succeeded", done["error"]
        assert result(done_id).status_code == 200
        for job_id in (running_id, queued_id):
            job = httpx.get(f"{srv.url}/v1/jobs/{job_id}", headers=AUTH).json()
            assert job["status"] == "cancelled" and (job_id == running_id or job["started"] is None)
            assert not (state / "jobs" / job_id).exists()
        removed = delete(done_id)
        assert removed.status_code == 200 and removed.json()["status"] == "succeeded" and removed.json()["expired"]
        gone = result(done_id)
        assert gone.status_code == 410 and "removed" in gone.json()["error"], gone.text
        assert not (state / "results" / f"{done_id}.zip").exists() and not (state / "jobs" / done_id).exists()

        kept_id = post(small)
        _wait_status(srv.url, kept_id, ("succeeded",))
        assert result(kept_id).status_code == 200  # within the retention period
        deadline = time.monotonic() + 30
        while not httpx.get(f"{srv.url}/v1/jobs/{kept_id}", headers=AUTH).json()["expired"]:
            assert time.monotonic() < deadline, "the result was not removed after the retention period"
            time.sleep(0.5)
        assert result(kept_id).status_code == 410
        assert not (state / "results" / f"{kept_id}.zip").exists() and not (state / "jobs" / kept_id).exists()


@pytest.mark.slow
def test_real_pcap_job_passes_the_validator(server, tiny_model: Path, tmp_path: Path) -> None:
    """format=pcap: generate → repair → validate; the downloaded pcaps pass the validator again."""
    from netdiffusion.validate import validate_dir

    classes = model_classes(tiny_model)[:2]
    r = httpx.post(f"{server.url}/v1/jobs", json={"classes": classes, "count": 2, "packets": 16, "format": "pcap"},
                   headers=AUTH)
    assert r.status_code == 202, r.text
    job = wait_job(server.url, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    archive = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=AUTH)
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(tmp_path)
    pcaps = sorted((tmp_path / "pcaps").rglob("*.pcap"))
    assert len(pcaps) == 4 and {p.parent.name for p in pcaps} == set(classes)
    assert job["result"]["validation"]["valid"] is True, job["result"]["validation"]
    # no server file paths in what the client sees (paths inside the result are archive-relative)
    assert "/jobs/" not in json.dumps(job["result"]) and '"/' not in json.dumps(job["result"]), job["result"]
    assert (tmp_path / "validation.json").exists()
    report = validate_dir(tmp_path / "pcaps", tcpreplay=False)
    assert report["failed"] == [] and report["totals"], report["totals"]


@pytest.mark.slow
def test_real_nprint_job(server, tiny_model: Path, tmp_path: Path) -> None:
    """format=nprint: nPrint CSVs that the project's own CSV reader parses back."""
    from netdiffusion.nprint_csv import read_csv

    cls = model_classes(tiny_model)[0]
    r = httpx.post(f"{server.url}/v1/jobs", json={"classes": [cls], "count": 2, "packets": 6, "format": "nprint"},
                   headers=AUTH)
    assert r.status_code == 202, r.text
    job = wait_job(server.url, r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    archive = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=AUTH)
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(tmp_path)
    csvs = sorted((tmp_path / "nprint").rglob("*.nprint"))  # nPrint CSV, one file per flow
    assert csvs
    rows = 0
    for path in csvs:
        _, matrix, _ = read_csv(path)
        assert set(map(int, set(matrix.ravel().tolist()))) <= {-1, 0, 1}
        rows += len(matrix)
    assert 2 <= rows <= 12


def test_bounded_load_has_no_errors(tiny_model: Path, tmp_path: Path) -> None:
    """200 requests (50 submissions + 150 status reads), 4 clients at a time, loopback only.

    Its own server, so the 50 queued jobs are dropped with it instead of delaying other tests."""
    body = {"classes": model_classes(tiny_model)[:1], "count": 1, "packets": 4, "format": "parquet"}
    env = {**BASE_ENV, "NETDIFFUSION_SERVE_QUOTA_JOBS": "1000"}
    with run_server(tmp_path / "state", tiny_model, TOKENS, env=env) as srv:
        result = load_test(srv.url, TOKENS[1], body, submits=50, status_per_submit=3, concurrency=4)
    summary = result.summary()
    assert summary["requests"] == 200
    assert result.errors == [], result.errors[:5]
