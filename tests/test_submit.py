"""``netdiffusion submit`` / ``schedule`` against a fake Kubeflow Pipelines API server on 127.0.0.1
(``tests/fake_kfp.py``).

The fake answers the few v2beta1 endpoints ``kfp.Client`` calls (healthz, experiments, runs,
recurring runs) and records every request, so the tests check the real HTTP bodies the real
client sends: the compiled pipeline spec and the run parameters.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netdiffusion.cli import main as cli_main
from tests.fake_kfp import FakeKFP, serve_fake_kfp
from tests.fake_kfp import posts as _posts


@pytest.fixture()
def kfp_server() -> Iterator[str]:
    with serve_fake_kfp() as url:
        yield url


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


def test_local_submit_honours_or_refuses_params(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --host, --param used to be dropped silently: seed=7 generated with seed 0, and an unknown
    name ran anyway although the same command with --host refuses it."""
    import pipelines.local

    calls = []
    monkeypatch.setattr(pipelines.local, "run_generate",
                        lambda out, **kw: calls.append(kw) or {"classes": {}, "seconds": 0, "paths": {}})
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit, match="no parameter.*nosuch"):  # what --host answers too
        cli_main(["submit", "--classes", "webex", "--count", "1", "--out", out, "--model", str(tmp_path),
                  "--param", "nosuch=1"])
    assert not calls
    assert cli_main(["submit", "--classes", "webex", "--count", "1", "--out", out, "--model", str(tmp_path),
                     "--param", "seed=7", "--param", "generate_gpus=2"]) == 0
    assert calls[-1]["seed"] == 7 and "generate_gpus" not in calls[-1]


def test_make_submit_passes_input() -> None:
    """`make submit PIPELINE=refresh` had no way to name the captures: the run got the pipeline default
    input_uri `data/sample`, which does not exist in the cluster images."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["make", "-n", "-s", "submit", "PIPELINE=refresh", "INPUT=s3://bucket/captures"],
                          cwd=repo, capture_output=True, text=True, timeout=60)
    joined = proc.stdout.replace("\\\n", " ")  # make -n echoes the recipe's line continuations
    line = next(line for line in joined.splitlines() if "netdiffusion submit" in line)
    assert "--pipeline refresh" in line and "--input s3://bucket/captures" in line, line
