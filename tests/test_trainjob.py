"""The TrainJob the train component creates, validated against the Kubeflow Trainer CRD schema."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from components.train.remote import torchrun_command
from components.train.trainjob import (
    PATCH_MANAGER,
    TRAINER_JOB,
    build_trainjob,
    job_state,
    run_trainjob,
    train_command,
    trainjob_name,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "components/train/trainjob_schema.json").read_text())
GPU_POOL = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
GPU_TAINT = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def manifest(**overrides):
    kwargs = dict(
        image="ghcr.io/netdiffusion/netdiffusion-train:0.1.0", namespace="kubeflow-user",
        command=train_command(data_uri="s3://bucket/staging/run/data", model_uri="s3://bucket/staging/run/model",
                              backend="native", config="gpu", seed=3),
        num_nodes=2, gpus_per_node=4, cpu="8", memory="64Gi", node_selector=GPU_POOL, tolerations=GPU_TAINT,
        env={"NETDIFFUSION_S3_ENDPOINT": "http://minio:9000"},
        secret_env={"AWS_ACCESS_KEY_ID": ("netdiffusion-s3", "AWS_ACCESS_KEY_ID")},
    )
    kwargs.update(overrides)
    return build_trainjob(trainjob_name("nd", "refresh-2026-11-22"), **kwargs)


def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_trainjob_validates_against_crd_schema():
    job = manifest()
    jsonschema.validate(job, SCHEMA)
    spec = job["spec"]
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["numProcPerNode"] == 4
    assert spec["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    patch = spec["runtimePatches"][0]
    assert patch["manager"] == PATCH_MANAGER
    job_patch = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert job_patch["name"] == TRAINER_JOB
    pod = job_patch["template"]["spec"]["template"]["spec"]
    assert pod == {"nodeSelector": GPU_POOL, "tolerations": GPU_TAINT}
    env = {e["name"]: e for e in spec["trainer"]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "netdiffusion-s3",
                                                                     "key": "AWS_ACCESS_KEY_ID"}


def test_cpu_trainjob_without_placement_validates():
    job = manifest(num_nodes=1, gpus_per_node=0, node_selector=None, tolerations=None, env=None, secret_env=None)
    jsonschema.validate(job, SCHEMA)
    assert "runtimePatches" not in job["spec"] and "numProcPerNode" not in job["spec"]["trainer"]
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["limits"]


@pytest.mark.parametrize("mutate", [
    lambda j: j["metadata"].update(name="Bad_Name"),
    lambda j: j["spec"].pop("runtimeRef"),
    lambda j: j["spec"]["trainer"].update(numNodes="two"),
    lambda j: j["spec"]["trainer"].update(podSpecOverrides=[]),
    lambda j: j["spec"]["runtimePatches"][0].pop("manager"),
    lambda j: j["spec"]["trainer"]["resourcesPerNode"]["limits"].update(memory="lots"),
])
def test_schema_rejects_broken_trainjobs(mutate):
    job = copy.deepcopy(manifest())
    mutate(job)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(job, SCHEMA)


def test_names_are_rfc1035_labels():
    for raw in ("nd", "9-refresh", "x" * 100, "Refresh_Run.2026"):
        name = trainjob_name(raw, "Run_01")
        assert len(name) <= 63 and name[0].isalpha() and name == name.lower()
        jsonschema.validate(manifest() | {"metadata": {"name": name}}, SCHEMA)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="num_nodes"):
        manifest(num_nodes=0)
    with pytest.raises(ValueError, match="gpus_per_node"):
        manifest(gpus_per_node=-1)


def test_job_state_reads_terminal_conditions():
    assert job_state({}) is None
    running = {"status": {"conditions": [{"type": "Suspended", "status": "False"}]}}
    assert job_state(running) is None
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == "Complete"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}) == "Failed"


def test_the_trainjob_runs_the_library_train_command_under_torchrun():
    cmd = manifest()["spec"]["trainer"]["command"]
    assert cmd[:3] == ["python", "-m", "components.train.remote"]
    inner = torchrun_command("/data", "/model", "native", "gpu", 3)
    assert inner[1:6] == ["-m", "torch.distributed.run", "--module", "netdiffusion", "train"]
    assert inner[inner.index("--config") + 1] == "gpu" and inner[inner.index("--data") + 1] == "/data"


@pytest.mark.slow
def test_trainjob_entrypoint_trains_under_torchrun(small_dataset, tmp_path, monkeypatch):
    """What every TrainJob pod runs, for real on one CPU node: fetch, torchrun train, publish."""
    import socket

    from components.train import remote

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PET_MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("PET_MASTER_PORT", str(port))
    monkeypatch.setenv("PET_NNODES", "1")
    monkeypatch.setenv("PET_NPROC_PER_NODE", "1")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # torchrun leaves a torchelastic_* folder there
    rc = remote.main(["--data-uri", str(small_dataset), "--model-uri", str(tmp_path / "published"),
                      "--config", "tiny", "--seed", "1"])
    assert rc == 0
    meta = json.loads((tmp_path / "published" / "model.json").read_text())
    assert meta["backend"] == "native" and meta["classes"]


class FakeKubeAPI(BaseHTTPRequestHandler):
    """The two TrainJob endpoints of a Kubernetes API server; a job completes (or fails) on the 3rd poll."""

    jobs: dict[str, dict] = {}
    polls: dict[str, int] = {}
    outcome = "Complete"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        jsonschema.validate(body, SCHEMA)  # what reaches the API server is a valid TrainJob
        FakeKubeAPI.jobs[self.path + "/" + body["metadata"]["name"]] = body
        self._send(201, body)

    def do_GET(self) -> None:  # noqa: N802
        job = FakeKubeAPI.jobs.get(self.path)
        if job is None:
            self._send(404, {"kind": "Status", "code": 404})
            return
        n = FakeKubeAPI.polls[self.path] = FakeKubeAPI.polls.get(self.path, 0) + 1
        cond = [{"type": FakeKubeAPI.outcome, "status": "True"}] if n >= 3 else []
        self._send(200, {**job, "status": {"conditions": cond}})


@pytest.fixture()
def kube_api():
    from kubernetes import client

    FakeKubeAPI.jobs, FakeKubeAPI.polls = {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conf = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield client.CustomObjectsApi(client.ApiClient(conf))
    finally:
        server.shutdown()
        server.server_close()


def test_run_trainjob_creates_and_waits_for_completion(kube_api):
    FakeKubeAPI.outcome = "Complete"
    assert run_trainjob(manifest(), api=kube_api, poll_seconds=0.01) == "Complete"
    (path,) = FakeKubeAPI.jobs
    assert path.startswith("/apis/trainer.kubeflow.org/v1alpha1/namespaces/kubeflow-user/trainjobs/")
    assert FakeKubeAPI.polls[path] == 3


def test_run_trainjob_raises_on_failure_and_timeout(kube_api):
    FakeKubeAPI.outcome = "Failed"
    with pytest.raises(RuntimeError, match="failed"):
        run_trainjob(manifest(), api=kube_api, poll_seconds=0.01)
    FakeKubeAPI.jobs.clear()
    FakeKubeAPI.polls.clear()
    with pytest.raises(TimeoutError):
        run_trainjob(manifest(), api=kube_api, poll_seconds=0.01, timeout_seconds=0.0)
