"""Large jobs → Kubeflow Pipelines ``generate`` runs, end to end on loopback.

A real ``netdiffusion serve`` process is pointed (``KFP_HOST``) at the fake KFP v2beta1 API server
of ``tests/fake_kfp.py``; requests above the local limit become runs created by the real
``kfp.Client``, and the service's poller (every ``NETDIFFUSION_SERVE_PIPELINE_POLL_S``) moves the
jobs to succeeded/failed when the fake reports the runs finished. A KFP host that is down fails
the job with the reason instead of failing the request: jobs are accepted as ``queued`` and submitted
to KFP by the service's background submitter (tests/test_serve_hardening.py: a KFP host that never
answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from netdiffusion.serve.loadtest import free_port, run_server
from netdiffusion.serve.pipeline import ENV_PARAMETERS
from tests.fake_kfp import FakeKFP, posts, serve_fake_kfp
from tests.test_serve import AUTH, BASE_ENV, TOKENS, model_classes

S3_URI = "s3://results/serve"
POLL_S = 0.2
# BASE_ENV's local limit is 100 flows; 3 classes x 40 flows is a large job
COUNT = 40
# the pipeline parameters the service reads from env (Helm ConfigMap): empty = not set, whatever the
# environment running the tests has; one is set to check that it reaches the run
PLACEMENT_ENV = {**dict.fromkeys(ENV_PARAMETERS.values(), ""), "KFP_NAMESPACE": "",
                 "NETDIFFUSION_SERVE_KFP_HOST": "", "NETDIFFUSION_GPU_NODE_SELECTOR": '{"pool": "h200"}'}


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def get_job(url: str, job_id: str) -> dict:
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def run_gets(run_id: str) -> int:
    with FakeKFP.lock:
        return sum(1 for r in FakeKFP.requests if r["method"] == "GET" and r["path"].endswith(f"/runs/{run_id}"))


@pytest.fixture(scope="module")
def kfp_service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """(service, fake KFP URL): runs stay RUNNING until a test says otherwise."""
    with serve_fake_kfp() as kfp_url:
        FakeKFP.default_run = {"state": "RUNNING"}
        env = {**BASE_ENV, **PLACEMENT_ENV, "KFP_HOST": kfp_url, "NETDIFFUSION_SERVE_S3_URI": S3_URI,
               "NETDIFFUSION_SERVE_PIPELINE_POLL_S": str(POLL_S)}
        with run_server(tmp_path_factory.mktemp("serve-kfp"), tiny_model, TOKENS, env=env) as srv:
            yield srv, kfp_url


def submit_large(url: str, classes: list[str], **extra: object) -> tuple[str, str]:
    """POST a large job; checks the answer and the job row; returns (job id, KFP run id)."""
    r = httpx.post(f"{url}/v1/jobs", json={"classes": classes, "count": COUNT, "seed": 5, **extra},
                   headers=AUTH, timeout=60)
    assert r.status_code == 202, r.text
    accepted = r.json()
    # accepted at once; the submission to KFP happens off the request path
    assert accepted["target"] == "pipeline" and accepted["status"] == "queued", accepted
    assert accepted["flows"] == COUNT * len(classes)
    job = wait_for("the job to be submitted", lambda: (j := get_job(url, accepted["id"]))["status"] not in (
        "queued", "running") and j)
    assert job["status"] == "submitted", job
    run_id = job["result"]["pipeline_run_id"]
    assert run_id.startswith("run-")
    return accepted["id"], run_id


def test_large_job_becomes_a_generate_run_that_succeeds(kfp_service, tiny_model: Path) -> None:
    srv, kfp_url = kfp_service
    classes = model_classes(tiny_model)[:3]
    job_id, run_id = submit_large(srv.url, classes)

    (create,) = [p for p in posts("/runs") if p["body"]["display_name"] == f"serve-{job_id}"]
    body = create["body"]
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "netdiffusion-generate"
    assert body["runtime_config"]["parameters"] == {
        "classes": classes, "count": COUNT, "seed": 5, "model_uri": str(tiny_model),
        "output_uri": f"{S3_URI}/{job_id}", "gpu_node_selector": {"pool": "h200"}}
    job = get_job(srv.url, job_id)
    assert job["result"]["kfp_host"] == kfp_url
    assert job["result"]["run_url"] == f"{kfp_url}/#/runs/details/{run_id}"
    assert job["request"]["classes"] == classes and job["flows"] == COUNT * len(classes)

    # the poller follows the run while it runs ...
    wait_for("the poller to see the running run", lambda: run_gets(run_id) >= 1)
    wait_for("stage 'pipeline run running'", lambda: get_job(srv.url, job_id)["stage"] == "pipeline run running")
    assert get_job(srv.url, job_id)["status"] == "submitted"
    early = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH)
    assert early.status_code == 409 and "submitted" in early.json()["error"]

    # ... and finishes the job when KFP reports the run done
    FakeKFP.runs[run_id] = {"state": "SUCCEEDED"}
    job = wait_for("the job to succeed", lambda: (j := get_job(srv.url, job_id))["status"] != "submitted" and j)
    assert job["status"] == "succeeded", job
    assert job["error"] is None and job["progress"] == 1.0 and job["finished"]
    assert job["result"]["pipeline_state"] == "SUCCEEDED" and job["result"]["pipeline_run_id"] == run_id
    prefix = f"{S3_URI}/{job_id}/"
    assert job["result"]["uris"] == {"prefix": prefix}
    for query in ("", "?archive=uris"):  # no local archive: the result is where the run published it
        result = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result{query}", headers=AUTH)
        assert result.status_code == 200 and result.json() == {"id": job_id, "uris": {"prefix": prefix}}
    # a finished job is not polled again
    polled = run_gets(run_id)
    time.sleep(5 * POLL_S)
    assert run_gets(run_id) == polled


def test_cancelling_a_submitted_job_terminates_its_run(kfp_service, tiny_model: Path) -> None:
    srv, _ = kfp_service
    job_id, run_id = submit_large(srv.url, model_classes(tiny_model)[2:5])
    FakeKFP.runs[run_id] = None  # KFP does not know the run: the job cannot be cancelled yet
    refused = httpx.delete(f"{srv.url}/v1/jobs/{job_id}", headers=AUTH, timeout=30)
    assert refused.status_code == 502 and run_id in refused.json()["error"], refused.text
    assert get_job(srv.url, job_id)["status"] == "submitted"
    FakeKFP.runs[run_id] = {"state": "RUNNING"}
    r = httpx.delete(f"{srv.url}/v1/jobs/{job_id}", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert [p["path"] for p in posts(":terminate")][-1].endswith(f"/runs/{run_id}:terminate")
    assert FakeKFP.runs[run_id]["state"] == "CANCELED"
    time.sleep(5 * POLL_S)  # the poller leaves a cancelled job alone
    job = get_job(srv.url, job_id)
    assert job["status"] == "cancelled" and job["error"] == "cancelled by its owner" and job["finished"]
    result = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH)
    assert result.status_code == 409 and "cancelled" in result.json()["error"]


def test_failed_run_fails_the_job_with_the_kfp_message(kfp_service, tiny_model: Path) -> None:
    srv, _ = kfp_service
    job_id, run_id = submit_large(srv.url, model_classes(tiny_model)[1:4])
    FakeKFP.runs[run_id] = {"state": "FAILED",
                            "error": {"code": 9, "message": "generate-class: OOMKilled (exit code 137)"}}
    job = wait_for("the job to fail", lambda: (j := get_job(srv.url, job_id))["status"] != "submitted" and j)
    assert job["status"] == "failed", job
    assert job["error"] == f"pipeline run {run_id} failed: generate-class: OOMKilled (exit code 137)"
    assert job["result"]["pipeline_state"] == "FAILED"
    result = httpx.get(f"{srv.url}/v1/jobs/{job_id}/result", headers=AUTH)
    assert result.status_code == 409 and "OOMKilled" in result.json()["error"]


def test_a_run_kfp_cannot_report_does_not_hold_up_the_others(kfp_service, tiny_model: Path) -> None:
    """A run that KFP answers 404 for (deleted) must not stop the poller finishing other jobs."""
    srv, _ = kfp_service
    classes = model_classes(tiny_model)[:3]
    lost_id, lost_run = submit_large(srv.url, classes)
    FakeKFP.runs[lost_run] = None  # 404
    job_id, run_id = submit_large(srv.url, classes)
    FakeKFP.runs[run_id] = {"state": "SUCCEEDED"}
    job = wait_for("the second job to succeed", lambda: (j := get_job(srv.url, job_id))["status"] != "submitted"
                   and j, timeout_s=10.0)
    assert job["status"] == "succeeded", job
    lost = get_job(srv.url, lost_id)
    assert lost["status"] == "submitted" and "404" in lost["stage"], lost


def test_pipeline_jobs_cannot_honour_local_only_options(kfp_service, tiny_model: Path) -> None:
    """The generate pipeline writes pcaps of the model's flow length: other formats or a packet
    count are refused for large jobs (422, nothing submitted) rather than silently ignored
    (local jobs take them: tests/test_serve.py)."""
    srv, _ = kfp_service
    classes = model_classes(tiny_model)[:3]
    runs_before = len(posts("/runs"))
    for extra, word in (({"format": "parquet"}, "format"), ({"format": "nprint"}, "format"),
                        ({"packets": 4}, "packets")):
        r = httpx.post(f"{srv.url}/v1/jobs", json={"classes": classes, "count": COUNT, **extra}, headers=AUTH)
        assert r.status_code == 422 and word in r.json()["error"], (extra, r.text)
    assert len(posts("/runs")) == runs_before


def test_kfp_host_down_fails_the_job_not_the_request(tiny_model: Path, tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {**BASE_ENV, **PLACEMENT_ENV, "KFP_HOST": down, "NETDIFFUSION_SERVE_PIPELINE_POLL_S": str(POLL_S)}
    classes = model_classes(tiny_model)[:3]
    with run_server(tmp_path / "state", tiny_model, TOKENS, env=env) as srv:
        r = httpx.post(f"{srv.url}/v1/jobs", json={"classes": classes, "count": COUNT}, headers=AUTH, timeout=60)
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["target"] == "pipeline" and accepted["status"] == "queued", accepted
        job = wait_for("the job to fail", lambda: (j := get_job(srv.url, accepted["id"]))["status"] == "failed"
                       and j)
        assert job["finished"], job
        assert job["error"].startswith("pipeline submission failed: ") and down.split("//")[1].split(":")[1] in \
            job["error"], job["error"]
        result = httpx.get(f"{srv.url}/v1/jobs/{accepted['id']}/result", headers=AUTH)
        assert result.status_code == 409 and "pipeline submission failed" in result.json()["error"]
        time.sleep(3 * POLL_S)  # the poller keeps running against the dead host without harm
        assert get_job(srv.url, accepted["id"])["status"] == "failed"
        assert 'status="500"' not in httpx.get(f"{srv.url}/metrics").text
        assert srv.proc.poll() is None
