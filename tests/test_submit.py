"""``netdiffusion submit`` / ``schedule`` against a fake Kubeflow Pipelines API server on 127.0.0.1.

The fake answers the few v2beta1 endpoints ``kfp.Client`` calls (healthz, experiments, runs,
recurring runs) and records every request, so the tests check the real HTTP bodies the real
client sends: the compiled pipeline spec and the run parameters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

from netdiffusion.cli import main as cli_main


class FakeKFP(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": urlparse(self.path).path, "query": urlparse(self.path).query,
                 "body": json.loads(raw) if raw else None}
        FakeKFP.requests.append(entry)
        return entry

    def _answer(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        entry = self._record()
        if entry["path"].endswith("/healthz"):
            self._answer({"multi_user": False})
        elif entry["path"].endswith("/experiments"):
            self._answer({"experiments": [], "total_size": 0})
        elif "/runs/" in entry["path"]:
            self._answer({"run_id": entry["path"].rsplit("/", 1)[-1], "state": "SUCCEEDED"})
        else:
            self._answer({})

    def do_POST(self) -> None:  # noqa: N802
        entry = self._record()
        if entry["path"].endswith("/experiments"):
            self._answer({"experiment_id": "exp-1", "display_name": entry["body"]["display_name"]})
        elif entry["path"].endswith("/recurringruns"):
            self._answer({"recurring_run_id": "rr-1", **entry["body"]})
        elif entry["path"].endswith("/runs"):
            self._answer({"run_id": "run-42", "experiment_id": entry["body"].get("experiment_id"),
                          "display_name": entry["body"].get("display_name"), "state": "PENDING"})
        else:
            self._answer({"error": "unexpected"}, 404)


@pytest.fixture()
def kfp_server() -> Iterator[str]:
    FakeKFP.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKFP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _posts(suffix: str) -> list[dict]:
    return [r for r in FakeKFP.requests if r["method"] == "POST" and r["path"].endswith(suffix)]


def test_submit_generate_sends_the_compiled_pipeline_and_parameters(kfp_server, capsys):
    rc = cli_main(["submit", "--host", kfp_server, "--pipeline", "generate", "--classes", "zoom,meet",
                   "--count", "5000", "--model", "models:/netdiffusion@champion",
                   "--param", 'gpu_node_selector={"pool": "h100"}'])
    assert rc == 0
    assert "run-42" in capsys.readouterr().out
    assert any(r["path"].endswith("/healthz") for r in FakeKFP.requests)
    assert _posts("/experiments")[0]["body"]["display_name"] == "netdiffusion"
    (run,) = _posts("/runs")
    body = run["body"]
    assert body["experiment_id"] == "exp-1"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "netdiffusion-generate"
    params = body["runtime_config"]["parameters"]
    assert params == {"classes": ["zoom", "meet"], "count": 5000, "model_uri": "models:/netdiffusion@champion",
                      "gpu_node_selector": {"pool": "h100"}}
    # the platform spec (GPU placement, S3 secret) travels with the pipeline spec
    executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    generate = executors["exec-generate-class"]
    assert generate["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector")
    assert generate["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("gpu_tolerations")
    assert executors["exec-resolve-model"]["secretAsEnv"][0]["secretNameParameter"]


def test_submit_refresh(kfp_server):
    assert cli_main(["submit", "--host", kfp_server, "--pipeline", "refresh", "--input", "s3://data/captures",
                     "--count", "100", "--param", "train_nodes=4", "--param", "train_gpus=8"]) == 0
    (run,) = _posts("/runs")
    assert run["body"]["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "netdiffusion-refresh"
    assert run["body"]["runtime_config"]["parameters"] == {"count": 100, "input_uri": "s3://data/captures",
                                                           "train_nodes": 4, "train_gpus": 8}


def test_unknown_parameter_is_refused_before_any_request(kfp_server):
    with pytest.raises(SystemExit, match="no parameter"):
        cli_main(["submit", "--host", kfp_server, "--param", "gpus=2"])
    assert FakeKFP.requests == []


def test_schedule_creates_a_recurring_refresh(kfp_server):
    assert cli_main(["schedule", "--host", kfp_server, "--cron", "0 0 3 * * 0", "--input", "s3://data/x"]) == 0
    (job,) = _posts("/recurringruns")
    body = job["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert body["max_concurrency"] in (1, "1")
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "netdiffusion-refresh"
    assert body["runtime_config"]["parameters"] == {"input_uri": "s3://data/x"}


def test_schedule_rejects_five_field_cron_and_needs_a_host(kfp_server):
    with pytest.raises(SystemExit, match="6 fields"):
        cli_main(["schedule", "--host", kfp_server, "--cron", "0 3 * * 0"])
    assert cli_main(["schedule"]) == 1
