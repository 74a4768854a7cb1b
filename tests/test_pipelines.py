"""The compiled pipelines: fresh, carrying GPU placement and secrets, and runnable locally from YAML.

The end-to-end tests load ``pipelines/compiled/*.yaml`` back with ``components.load_component_from_file``
and run them on ``kfp.local`` with the ``tiny`` preset (2 real classes, a few flows, 32 packets per
flow), so what is submitted to a cluster is exactly what ran here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "compiled"
TINY_CLASSES = ["facebook", "webex"]

# components name their container image; the subprocess runner warns that it runs them here instead
pytestmark = [pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner:UserWarning")]


def _docs(name: str) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all((COMPILED / f"{name}.yaml").read_text())
    return pipeline, platform


def test_compiled_pipelines_are_fresh():
    from pipelines.compile import stale

    problems = stale()
    assert not problems, "\n".join(problems) + "\nrun `make pipelines`"


def test_stale_check_can_fail(tmp_path):
    from pipelines.compile import compile_all, stale

    compile_all(tmp_path)
    text = (tmp_path / "generate.yaml").read_text().replace("name: netdiffusion-generate", "name: renamed", 1)
    (tmp_path / "generate.yaml").write_text(text)
    assert [p for p in stale(tmp_path) if "generate.yaml: stale" in p]


@pytest.mark.parametrize("name,gpu_tasks", [("refresh", ["exec-train-model", "exec-generate-class"]),
                                            ("generate", ["exec-generate-class"])])
def test_compiled_yaml_carries_gpu_placement_and_s3_secret(name, gpu_tasks):
    pipeline, platform = _docs(name)
    params = pipeline["root"]["inputDefinitions"]["parameters"]
    assert params["gpu_node_selector"]["parameterType"] == "STRUCT"
    assert params["gpu_tolerations"]["parameterType"] == "LIST"
    assert params["gpu_tolerations"]["defaultValue"][0]["key"] == "nvidia.com/gpu"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task in gpu_tasks:
        k8s = executors[task]
        assert k8s["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector")
        assert k8s["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("gpu_tolerations")
        resources = pipeline["deploymentSpec"]["executors"][task]["container"]["resources"]
        assert "accelerator_type" in resources["accelerator"]["resourceType"]
        assert "gpus" in resources["accelerator"]["resourceCount"]
    secrets = [e for e in executors.values() if "secretAsEnv" in e]
    assert secrets, "no task gets the S3 credentials"
    for e in secrets:
        (secret,) = e["secretAsEnv"]
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("s3_secret")
        # QA: the S3 endpoint never reached pipeline pods (MinIO/SeaweedFS clusters went to AWS)
        (config,) = e["configMapAsEnv"]
        assert {m["envVar"] for m in config["keyToEnv"]} >= {"NETDIFFUSION_S3_ENDPOINT", "AWS_DEFAULT_REGION"}
        assert config["configMapNameParameter"]["componentInputParameter"].endswith("settings_config_map")
        assert config["optional"] is True


def test_the_service_sends_only_parameters_the_generate_pipeline_has():
    """The service fills these from the chart's ConfigMap; KFP rejects a run with an unknown one."""
    from netdiffusion.serve.pipeline import ENV_PARAMETERS

    pipeline, _ = _docs("generate")
    assert set(ENV_PARAMETERS) <= set(pipeline["root"]["inputDefinitions"]["parameters"])


def test_refresh_fans_out_over_shards_and_classes():
    pipeline, _ = _docs("refresh")
    tasks = pipeline["root"]["dag"]["tasks"]
    loops = {name: t for name, t in tasks.items() if "parameterIterator" in t}
    assert len(loops) == 2
    iterated = sorted(t["parameterIterator"]["items"]["inputParameter"] for t in loops.values())
    assert iterated == ["pipelinechannel--list-classes-Output", "pipelinechannel--plan-shards-Output"]
    order = ["plan-shards", "train-model", "validate-pcaps", "evaluate-synthetic", "register-model"]
    assert set(order) <= set(tasks)
    assert "train-model" in tasks["evaluate-synthetic"]["dependentTasks"]
    assert set(tasks["register-model"]["dependentTasks"]) >= {"train-model", "validate-pcaps", "evaluate-synthetic"}


@pytest.fixture(scope="module")
def local_refresh(tmp_path_factory, shared_data):
    """The compiled refresh pipeline, loaded from YAML and run on kfp.local (tiny preset)."""
    from kfp import components

    from pipelines.local import PRESETS, init_local

    out = tmp_path_factory.mktemp("refresh")
    root = init_local(out)
    refresh = components.load_component_from_file(str(COMPILED / "refresh.yaml"))
    p = PRESETS["tiny"]
    task = refresh(input_uri=str(shared_data), classes=TINY_CLASSES, count=p.count, packets=p.packets,
                   encode_shards=2, config=p.config, quick_evaluation=True, tracking_out=str(out),
                   generate_gpus=0, train_gpus=0)
    return out, root, task


@pytest.mark.slow
def test_refresh_runs_locally_from_compiled_yaml(local_refresh):
    out, root, task = local_refresh
    pcaps = Path(task.outputs["pcaps"].path)
    per_class = {d.name: len(list(d.glob("*.pcap"))) for d in pcaps.iterdir() if d.is_dir()}
    assert per_class == {c: 2 for c in TINY_CLASSES}
    report = json.loads((Path(task.outputs["report"].path) / "report.json").read_text())
    assert set(report["similarity"]["per_class"]) <= set(TINY_CLASSES)
    assert (Path(task.outputs["validation"].path) / "report.json").exists()
    assert (Path(task.outputs["model"].path) / "model.json").exists()
    registered = json.loads(task.outputs["registered"])
    assert registered["version"] and registered["model_uri"].startswith("models:/")
    assert (out / "mlflow.db").exists()
    # ParallelFor fanned out: one generate and one repair task directory per class
    run_dir = next(root.iterdir())
    assert len([d for d in run_dir.rglob("generate-class*") if d.is_dir()]) >= len(TINY_CLASSES)


@pytest.mark.slow
def test_generate_runs_locally_from_compiled_yaml(local_refresh, tmp_path):
    from kfp import components

    from pipelines.local import init_local

    out, _, refreshed = local_refresh
    init_local(tmp_path)
    generate = components.load_component_from_file(str(COMPILED / "generate.yaml"))
    task = generate(model_uri=refreshed.outputs["model"].path, classes=["webex"], count=3, generate_gpus=0,
                    output_uri=str(tmp_path / "published"))
    pcaps = list(Path(task.outputs["pcaps"].path).rglob("*.pcap"))
    assert len(pcaps) == 3 and all(p.parent.name == "webex" for p in pcaps)
    published = tmp_path / "published"
    assert len(list((published / "pcaps").rglob("*.pcap"))) == 3
    assert (published / "validation" / "report.json").exists()
    assert list((published / "data").rglob("*.parquet"))


def test_cli_shims_do_not_import_kfp_until_run():
    """``netdiffusion --help`` and the run/submit/schedule shims stay free of kfp and kubernetes."""
    import subprocess
    import sys

    code = ("import sys; from netdiffusion.cli import build_parser; build_parser(); "
            "import netdiffusion.sample_data, netdiffusion.commands.run, netdiffusion.commands.submit, "
            "netdiffusion.commands.schedule; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kfp', 'kubernetes')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_local_run_summary_table_and_mlflow_hint(tmp_path):
    """The end of `make run`: per-class table (a class without held-out flows shows '-') and how
    to open the MLflow UI on the run's local store."""
    import json as _json

    from pipelines.local import _summary, format_summary

    out = tmp_path / "out"
    for label in ("zoom", "youtube"):
        (out / "pcaps" / label).mkdir(parents=True)
        (out / "pcaps" / label / f"{label}-0.pcap").write_bytes(b"")
    (out / "validation").mkdir()
    (out / "validation" / "report.json").write_text(_json.dumps({"files": [
        {"file": "zoom/zoom-0.pcap", "ok": True, "packets": 3},
        {"file": "youtube/youtube-0.pcap", "ok": False, "packets": 5}]}))
    (out / "report").mkdir()
    (out / "report" / "report.json").write_text(_json.dumps({"similarity": {"per_class": {"zoom": {"jsd": 0.1234}}}}))
    (out / "mlflow.db").write_bytes(b"")
    summary = _summary(out, {"pcaps": out / "pcaps", "validation": out / "validation", "report": out / "report"},
                       {}, 12.0)
    assert summary["classes"]["zoom"] == {"pcaps": 1, "valid": 1, "invalid": 0, "packets": 3, "jsd": 0.123}
    assert summary["classes"]["youtube"]["invalid"] == 1 and "jsd" not in summary["classes"]["youtube"]
    # what encode rejected is counted and named at the end of the run
    from pipelines.local import _encode_totals

    run = out / "kfp" / "netdiffusion-refresh-1"
    for i, rejected in enumerate(([{"file": "/in/zoom/bad.pcap", "reason": "not a pcap or pcapng file"}], [])):
        shard = run / f"for-loop-1-iteration-{i}" / "encode-shard" / "data"
        shard.mkdir(parents=True)
        (shard / "summary.json").write_text(_json.dumps({"files_read": 3, "files_rejected": rejected}))
    (run / "train-model" / "model").mkdir(parents=True)
    summary["captures"] = _encode_totals(out / "kfp", run / "train-model" / "model")
    assert summary["captures"]["read"] == 6 and len(summary["captures"]["rejected"]) == 1
    text = format_summary(summary)
    assert "captures: 6 read, 1 rejected" in text and "rejected /in/zoom/bad.pcap: not a pcap" in text
    youtube_row = next(line for line in text.splitlines() if line.startswith("youtube"))
    assert youtube_row.split()[-1] == "-"
    # a class asked for that got no pcaps (every capture rejected) is named with why, not only logged
    from pipelines.local import _classes_without_pcaps

    source = tmp_path / "in"
    (source / "bad").mkdir(parents=True)
    (source / "manifest.csv").write_text("path,label\nzoom/a.pcap,zoom\nbad/bad.pcap,bad\nyoutube/y.pcap,youtube\n")
    summary["captures"]["rejected"].append({"file": "/in/bad/bad.pcap", "reason": "not a pcap or pcapng file"})
    summary["classes_without_pcaps"] = _classes_without_pcaps(str(source), [], summary)
    assert summary["classes_without_pcaps"] == {"bad": "1 of its captures rejected (above)"}
    assert _classes_without_pcaps(str(source), ["zoom", "webex"], summary) == {
        "webex": "not in the input's manifest"}
    assert "class bad: no pcaps: 1 of its captures rejected (above)" in format_summary(summary)
    # a capture read but without one usable packet (ARP only) is named with why, and so is its class;
    # a class asked for that the manifest lacks says so (QA: both were "no flows encoded or generated")
    (source / "manifest.csv").write_text("path,label\nzoom/a.pcap,zoom\nbad/bad.pcap,bad\narp.pcap,arp only\n")
    summary["captures"]["without_flows"] = [{"file": "/in/arp.pcap", "label": "arp only", "packets_read": 4,
                                             "skipped": {"non_ip": 4}}]
    assert _classes_without_pcaps(str(source), ["zoom", "arp only", "nosuch"], summary) == {
        "arp only": "1 of its captures without flows (above)", "nosuch": "not in the input's manifest"}
    assert "no flows from /in/arp.pcap (class arp only): 0 of 4 packets kept (non_ip: 4)" in format_summary(summary)
    summary["captures"]["without_flows"] = []
    # a capture cut short mid-write keeps its complete packets, and the summary says so
    summary["captures"]["truncated"] = [{"file": "/in/zoom/cut.pcap", "reason": "record 90: cut short (7 trailing "
                                         "bytes; file truncated)", "packets_read": 89}]
    text_cut = format_summary(summary)
    assert "captures: 6 read, 2 rejected, 1 cut short" in text_cut
    assert "cut short /in/zoom/cut.pcap: record 90: cut short (7 trailing bytes; file truncated); kept the 89 " \
        "complete packets before the cut" in text_cut
    summary["captures"]["truncated"][0]["packets_read"] = 1
    assert "kept the 1 complete packet before the cut" in format_summary(summary)
    summary["captures"]["truncated"] = []
    assert f"ui --backend-store-uri sqlite:///{out.resolve() / 'mlflow.db'}" in text
    # a model left as challenger says why (e.g. a one-class run has no classifier accuracy to compare)
    summary["registered"] = {"model_uri": "models:/netdiffusion/1", "alias": "challenger", "run_id": "r",
                             "promoted": False, "reason": "candidate lacks metric(s) utility.x"}
    assert "not champion: candidate lacks metric(s) utility.x" in format_summary(summary)


def test_local_run_summary_names_a_class_that_is_not_file_safe_once(tmp_path):
    """A label with a space (``game traffic``) has its pcaps under ``game_traffic-<hash>/``: the summary
    shows one row under the label, and the class is not listed as having no pcaps (QA: an nDPI run
    with manifest label ``game traffic`` printed two rows, pcaps under the folder name, jsd under the label)."""
    import json as _json

    from netdiffusion.names import file_name
    from pipelines.local import _classes_without_pcaps, _folder_labels, _summary

    out, folder = tmp_path / "out", file_name("game traffic")
    (out / "pcaps" / folder).mkdir(parents=True)
    (out / "pcaps" / folder / f"{folder}-s0-000000.pcap").write_bytes(b"")
    (out / "validation").mkdir()
    (out / "validation" / "report.json").write_text(_json.dumps({"files": [
        {"file": f"{folder}/{folder}-s0-000000.pcap", "ok": True, "packets": 3}]}))
    (out / "report").mkdir()
    (out / "report" / "report.json").write_text(_json.dumps({"similarity": {"per_class": {"game traffic": {"jsd": 0.5}}}}))
    run = out / "kfp" / "netdiffusion-refresh-1"
    repaired = run / "for-loop-2-iteration-0" / "repair-flows" / "repaired"
    repaired.mkdir(parents=True)
    (repaired / "repair_report.json").write_text(_json.dumps({"flows": [
        {"label": "game traffic", "file": f"{folder}/{folder}-s0-000000.pcap"}]}))
    (run / "validate-pcaps" / "pcaps").mkdir(parents=True)
    labels = _folder_labels(out / "kfp", run / "validate-pcaps" / "pcaps")
    summary = _summary(out, {"pcaps": out / "pcaps", "validation": out / "validation", "report": out / "report"},
                       {}, 1.0, labels)
    assert summary["classes"] == {"game traffic": {"pcaps": 1, "valid": 1, "invalid": 0, "packets": 3, "jsd": 0.5}}
    source = tmp_path / "in"
    source.mkdir()
    (source / "manifest.csv").write_text("path,label\na.pcap,game traffic\n")
    assert _classes_without_pcaps(str(source), [], summary) == {}


@pytest.mark.slow
def test_local_generate_keeps_the_refresh_run_summary(local_refresh, tmp_path):
    """A local `submit` (generate) writes its summary under <out>/generated/, next to its pcaps, and leaves
    the <out>/run_summary.json that `netdiffusion run` wrote alone."""
    from pipelines.local import run_generate

    _, _, refreshed = local_refresh
    out = tmp_path / "out"
    out.mkdir()
    (out / "run_summary.json").write_text(json.dumps({"from": "refresh"}))
    summary = run_generate(out, model=refreshed.outputs["model"].path, classes=["webex"], count=1,
                           tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert json.loads((out / "run_summary.json").read_text()) == {"from": "refresh"}
    written = json.loads((out / "generated" / "run_summary.json").read_text())
    assert written["classes"] == summary["classes"] and list(summary["classes"]) == ["webex"]
    assert summary["classes"]["webex"]["pcaps"] == 1


def test_local_run_failure_names_the_reason(tmp_path):
    """When a task fails, the error that ends a local run says why (the task's last error line), not only
    which task: kfp.local itself raises just "Inner task failed: 'resolve-model'"."""
    from pipelines.local import run_generate

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"classes": ["facebook", "webex"]}))
    with pytest.raises(RuntimeError) as failed:
        run_generate(tmp_path / "out", model=str(model), classes=["meet", "zoom"], count=1,
                     tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    message = str(failed.value)
    assert "resolve-model" in message
    assert "model has no class(es) meet, zoom (it knows facebook, webex)" in message
    assert "\033[" not in message  # no terminal colours in the one line `netdiffusion` prints


def test_run_input_may_name_the_manifest_but_no_other_file(tmp_path, monkeypatch, capsys):
    """Regression: `netdiffusion run --input caps/manifest.csv` started the pipeline and failed in
    plan-shards with "caps/manifest.csv/manifest.csv: does not exist"; any other file failed the same
    way. The manifest now stands for its folder; another file is one line, exit 2, nothing run."""
    import pipelines.local
    from netdiffusion.cli import main

    calls = []
    monkeypatch.setattr(pipelines.local, "run_refresh", lambda out, **kw: calls.append(kw) or {})
    monkeypatch.setattr(pipelines.local, "format_summary", lambda summary: "")
    (tmp_path / "caps").mkdir()
    (tmp_path / "caps" / "manifest.csv").write_text("path,label\nx.pcap,a\n")
    (tmp_path / "caps" / "x.pcap").write_bytes(b"")
    assert main(["run", "--input", str(tmp_path / "caps" / "manifest.csv"), "--out", str(tmp_path / "o")]) == 0
    assert calls[0]["input_uri"] == str(tmp_path / "caps")
    assert main(["run", "--input", str(tmp_path / "caps" / "x.pcap"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "x.pcap: --input is a folder" in err and len(calls) == 1 and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_local_run_with_the_stable_diffusion_backend(tmp_path, shared_data):
    """`netdiffusion run --backend sd` (QA: `run` had no way to pick the SD backend): the whole refresh
    pipeline on kfp.local with a tiny SD model built from config (no hub, no GPU, ~25 s)."""
    from pipelines.local import run_refresh

    summary = run_refresh(tmp_path / "out", input_uri=str(shared_data), classes=list(TINY_CLASSES), preset="tiny",
                          backend="sd")
    meta = json.loads((tmp_path / "out" / "model" / "model.json").read_text())
    assert meta["backend"] == "sd" and (tmp_path / "out" / "model" / "pytorch_lora_weights.safetensors").exists()
    assert set(summary["classes"]) == set(TINY_CLASSES)
    for row in summary["classes"].values():
        assert row["pcaps"] >= 1 and row["invalid"] == 0 and row["valid"] == row["pcaps"], row
    assert summary["registered"].get("alias") == "champion"


@pytest.mark.slow
def test_cli_run_on_a_folder_without_a_manifest(tmp_path, shared_data):
    """`netdiffusion run --input FOLDER` (class folders, no manifest.csv), as a user types it: the
    pipeline succeeded, then the run crashed reading the folder's classes (QA). kfp.local had left
    its per-task print function in place (two encode tasks side by side) and numba, first imported
    there, refused to start. Runs in a fresh process, as only there numba is not yet imported."""
    import shutil
    import subprocess
    import sys

    source = tmp_path / "captures"
    for name in TINY_CLASSES:
        (source / name).mkdir(parents=True)
        for capture in (shared_data / "pcaps" / name).glob("*.pcap"):
            shutil.copy(capture, source / name / capture.name)
    proc = subprocess.run([sys.executable, "-m", "netdiffusion", "run", "--input", str(source), "--preset", "tiny",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert set(summary["classes"]) == set(TINY_CLASSES) and summary["classes_without_pcaps"] == {}
