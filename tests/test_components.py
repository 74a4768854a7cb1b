"""Every component, run alone on ``kfp.local`` (subprocess runner, this venv) on tiny real data.

Inputs that are artifacts are brought in with ``dsl.importer`` (lists through ParallelFor +
``dsl.Collected``), exactly how the pipelines hand them over. The whole-pipeline runs are in
``test_pipelines.py``.
"""

import json
import sqlite3
from pathlib import Path
from typing import List  # noqa: UP035 (KFP reads typing annotations)

import pyarrow.parquet as pq
import pytest
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Model

from components.common import merge_datasets, plan_shards
from components.encode.component import encode_shard, list_classes
from components.encode.component import plan_shards as plan_shards_component
from components.evaluate.component import evaluate_synthetic
from components.generate.component import generate_class
from components.register.component import publish_outputs, register_model, resolve_model
from components.repair.component import repair_flows
from components.train.component import train_model
from components.validate.component import validate_pcaps
from pipelines.local import init_local

CLASSES = ["facebook", "webex"]


# components name their container image; the subprocess runner warns that it runs them here instead
pytestmark = [pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:.*have no effect in the current local runner:UserWarning")]

@pytest.fixture(scope="module")
def kfp_local(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("components")
    init_local(out)
    return out


def _flows(dataset: str | Path) -> dict[str, int]:
    counts: dict[str, set] = {}
    for shard in Path(dataset).rglob("*.parquet"):
        table = pq.read_table(shard, columns=["flow_id", "label"])
        for fid, label in zip(table.column("flow_id").to_pylist(), table.column("label").to_pylist(), strict=True):
            counts.setdefault(label, set()).add(fid)
    return {k: len(v) for k, v in sorted(counts.items())}


def _ids(dataset: str | Path) -> list[str]:
    return sorted({f for shard in Path(dataset).rglob("*.parquet")
                   for f in pq.read_table(shard, columns=["flow_id"]).column("flow_id").to_pylist()})


# ----------------------------------------------------------------------------------- encode
def test_plan_and_list_classes(kfp_local, shared_data):
    plan = plan_shards_component(input_uri=str(shared_data), classes=CLASSES + ["whatsapp"], shards=2)
    shards = [json.loads(s) for s in plan.output]
    assert len(shards) == 2
    files = sorted(f["path"] for s in shards for f in s["files"])
    assert files == sorted(["pcaps/facebook/facebook.pcap", "pcaps/webex/webex.pcap", "pcaps/whatsapp/wa_video.pcap",
                            "pcaps/whatsapp/wa_voice.pcap", "pcaps/whatsapp/whatsapp_login_call.pcap"])


def test_plan_balances_by_size_and_rejects_unknown_classes(shared_data, tmp_path):
    from components.common import read_manifest

    rows = read_manifest(str(shared_data), tmp_path, ["youtube"])
    shards = [json.loads(s) for s in plan_shards(str(shared_data), rows, 3)]
    sizes = [sum((shared_data / f["path"]).stat().st_size for f in s["files"]) for s in shards]
    assert len(shards) == 3 and max(sizes) < 2 * min(sizes)
    with pytest.raises(ValueError, match="meet"):
        read_manifest(str(shared_data), tmp_path, ["meet"])


@pytest.fixture(scope="module")
def encoded(kfp_local, shared_data) -> list[str]:
    paths = []
    for i, label in enumerate(CLASSES):
        rows = [{"path": f"pcaps/{label}/{label}.pcap", "label": label, "macro": "", "source": "test"}]
        task = encode_shard(shard=json.dumps({"index": i, "root": str(shared_data), "files": rows}), packets=32)
        assert task.outputs["Output"] > 0
        paths.append(task.outputs["data"].path)
    return paths


def test_encode_shard_rejects_a_missing_capture_and_encodes_the_rest(kfp_local, shared_data):
    """QA on unseen data: one manifest row naming a missing file ended the whole run."""
    rows = [{"path": "pcaps/webex/no-such-capture.pcap", "label": "webex", "macro": "", "source": "test"},
            {"path": "pcaps/webex/webex.pcap", "label": "webex", "macro": "", "source": "test"}]
    task = encode_shard(shard=json.dumps({"index": 9, "root": str(shared_data), "files": rows}), packets=32)
    assert task.outputs["Output"] > 0
    assert task.outputs["data"].metadata["rejected"] == 1 and task.outputs["data"].metadata["captures"] == 2
    summary = json.loads((Path(task.outputs["data"].path) / "summary.json").read_text())
    assert any("no-such-capture.pcap" in json.dumps(r) for r in summary["files_rejected"])


def test_encode_shard_names_captures_by_the_manifest_path(kfp_local, shared_data, tmp_path):
    """Rejections and flow sources name the file as the manifest names it: a link by its own name
    (not its target's), a missing local file by its path (not a scratch folder's) (QA: an e2e run on
    linked nDPI captures listed ``/tmp/encode-xxxx/missing/missing.pcap`` as rejected, and a rejected
    link under its target's name, so the summary could not tell which class lost it)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "renamed.pcap").symlink_to(shared_data / "pcaps" / "webex" / "webex.pcap")
    (tmp_path / "zero-bytes.pcap").write_bytes(b"")
    (root / "empty.pcap").symlink_to(tmp_path / "zero-bytes.pcap")
    rows = [{"path": name, "label": "webex", "macro": "", "source": "test"}
            for name in ("renamed.pcap", "empty.pcap", "missing.pcap")]
    task = encode_shard(shard=json.dumps({"index": 0, "root": str(root), "files": rows}), packets=8)
    summary = json.loads((Path(task.outputs["data"].path) / "summary.json").read_text())
    assert sorted(r["file"] for r in summary["files_rejected"]) == [str(root / "empty.pcap"), str(root / "missing.pcap")]
    assert [f["file"] for f in summary["files"]] == [str(root / "renamed.pcap")] and task.outputs["Output"] > 0


def test_encode_shard(encoded):
    assert [list(_flows(p)) for p in encoded] == [["facebook"], ["webex"]]
    for p in encoded:
        assert (Path(p) / "fields.json").exists()
        assert max(pq.read_table(s, columns=["packet_index"]).column(0).to_pylist()[-1]
                   for s in Path(p).rglob("*.parquet")) < 32


# ------------------------------------------------------------------------------------ train
@dsl.pipeline
def _train(paths: List[str]) -> Model:  # noqa: UP006
    with dsl.ParallelFor(paths) as p:
        data = dsl.importer(artifact_uri=p, artifact_class=Dataset)
    return train_model(data=dsl.Collected(data.output), config="tiny", launcher="in-process").outputs["model"]


@pytest.fixture(scope="module")
def trained(encoded):
    task = _train(paths=encoded)
    return Path(task.output.path)


@pytest.mark.slow
def test_train_names_every_capture_when_none_gave_flows(kfp_local, tmp_path, capfd):
    """Every capture rejected or without one usable packet: the train task fails naming each with
    why (QA: an e2e run whose classes had only an empty and a missing capture ended in
    'train-model': FileNotFoundError: /tmp/train-xxxx/data: no Parquet shards)."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "empty.pcap").write_bytes(b"")
    rows = [{"path": name, "label": "x", "macro": "", "source": "test"} for name in ("empty.pcap", "missing.pcap")]
    encoded = encode_shard(shard=json.dumps({"index": 0, "root": str(root), "files": rows}), packets=8)
    capfd.readouterr()
    with pytest.raises(RuntimeError):
        _train(paths=[encoded.outputs["data"].path])
    log = capfd.readouterr().out
    assert "ValueError: no flows encoded from any capture (0 read, 2 without flows)" in log
    assert f"{root / 'empty.pcap'}: empty or shorter than a capture header" in log and f"{root / 'missing.pcap'}: cannot read" in log


def test_train_splits_holdout_and_trains(trained, encoded):
    meta = json.loads((trained / "model.json").read_text())
    assert sorted(meta["classes"]) == CLASSES
    run = trained.parent.parent  # <run>/<task>/model -> the train task's outputs sit beside it
    train_dir, holdout_dir = run / "train-model" / "train_data", run / "train-model" / "holdout_data"
    merged = merge_datasets(encoded, run / "merged")
    total, train, held = _flows(merged), _flows(train_dir), _flows(holdout_dir)
    assert {k: train.get(k, 0) + held.get(k, 0) for k in total} == total
    assert held["webex"] >= 1 and "facebook" in train


@dsl.pipeline
def _classes(model: str, input_uri: str, classes: List[str]) -> List[str]:  # noqa: UP006
    imported = dsl.importer(artifact_uri=model, artifact_class=Model)
    return list_classes(input_uri=input_uri, classes=classes, model=imported.output).output


@pytest.mark.slow
def test_list_classes_keeps_only_classes_the_model_learned(trained, shared_data):
    """QA on unseen data: a manifest class whose captures were all rejected (no flows encoded) made
    its generate task fail, and with it the whole run. The manifest lists many classes; the model
    learned two: only those are generated, and asking only for unlearned ones is an error."""
    manifest = {r.split(",")[1] for r in (shared_data / "manifest.csv").read_text().splitlines()[1:]}
    assert len(manifest) > len(CLASSES)
    assert _classes(model=str(trained), input_uri=str(shared_data), classes=[]).output == CLASSES
    assert _classes(model=str(trained), input_uri=str(shared_data), classes=["webex", "zoom"]).output == ["webex"]
    with pytest.raises(RuntimeError):
        _classes(model=str(trained), input_uri=str(shared_data), classes=["zoom"])


# --------------------------------------------------------------- generate / repair / validate
@dsl.pipeline
def _generate_repair_validate(model: str, label: str, count: int) -> Artifact:
    imported = dsl.importer(artifact_uri=model, artifact_class=Model)
    generated = generate_class(model=imported.output, label=label, count=count)
    with dsl.ParallelFor([0]):
        repaired = repair_flows(generated=generated.outputs["generated"])
    return validate_pcaps(repaired=dsl.Collected(repaired.outputs["repaired"])).outputs["report"]


@pytest.mark.slow
def test_generate_repair_validate(trained):
    task = _generate_repair_validate(model=str(trained), label="webex", count=3)
    report_dir = Path(task.output.path)
    assert json.loads((report_dir / "report.json").read_text())
    run = report_dir.parent.parent
    generated = next(run.rglob("generated"))
    assert _flows(generated) == {"webex": 3}
    pcaps = sorted(next(run.rglob("validate-pcaps")).glob("pcaps/**/*.pcap"))
    assert len(pcaps) == 3 and {p.parent.name for p in pcaps} == {"webex"}


# ---------------------------------------------------------------------------- evaluate
@dsl.pipeline
def _evaluate(real: str, train: str, synthetic: List[str]) -> Artifact:  # noqa: UP006
    real_a = dsl.importer(artifact_uri=real, artifact_class=Dataset)
    train_a = dsl.importer(artifact_uri=train, artifact_class=Dataset)
    with dsl.ParallelFor(synthetic) as s:
        syn = dsl.importer(artifact_uri=s, artifact_class=Dataset)
    return evaluate_synthetic(real=real_a.output, train=train_a.output, synthetic=dsl.Collected(syn.output),
                              quick=True).outputs["report"]


def test_evaluate(trained, encoded):
    run = trained.parent.parent
    task = _evaluate(real=str(run / "train-model" / "holdout_data"), train=str(run / "train-model" / "train_data"),
                     synthetic=encoded)
    report = Path(task.output.path)
    data = json.loads((report / "report.json").read_text())
    assert "similarity" in data and (report / "report.md").exists() and list(report.glob("*.png"))


# ---------------------------------------------------------------- register / resolve / publish
@dsl.pipeline
def _register(model: str, data: str, validation: str, evaluation: str, out: str) -> str:
    m = dsl.importer(artifact_uri=model, artifact_class=Model)
    d = dsl.importer(artifact_uri=data, artifact_class=Dataset)
    v = dsl.importer(artifact_uri=validation, artifact_class=Artifact)
    e = dsl.importer(artifact_uri=evaluation, artifact_class=Artifact)
    return register_model(model=m.output, data=d.output, validation=v.output, evaluation=e.output,
                          train_summary="{}", config="tiny", out=out).output


@pytest.mark.slow
def test_register_then_resolve_and_publish(trained, encoded, tmp_path):
    validation = tmp_path / "validation"
    validation.mkdir()
    (validation / "report.json").write_text(json.dumps({"pcaps": 0, "clean": True}))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "report.json").write_text(json.dumps({"similarity": {"overall": {"jsd": 0.2}}}))
    out = tmp_path / "mlflow"
    result = json.loads(_register(model=str(trained), data=encoded[0], validation=str(validation),
                                  evaluation=str(evaluation), out=str(out)).output)
    assert result["version"] and result["alias"] in ("challenger", "champion")
    with sqlite3.connect(out / "mlflow.db") as db:
        aliases = db.execute("select alias, version from registered_model_aliases").fetchall()
    assert ("challenger", int(result["version"])) in aliases  # promote() always sets challenger

    resolved = resolve_model(model_uri=str(trained), classes=[])
    assert resolved.outputs["Output"] == CLASSES
    assert (Path(resolved.outputs["model"].path) / "model.json").exists()
    with pytest.raises(RuntimeError):  # unknown class: the task fails
        resolve_model(model_uri=str(trained), classes=["meet"])

    @dsl.pipeline
    def _publish(pcaps: str, validation: str, data: List[str], uri: str) -> str:  # noqa: UP006
        p = dsl.importer(artifact_uri=pcaps, artifact_class=Artifact)
        v = dsl.importer(artifact_uri=validation, artifact_class=Artifact)
        with dsl.ParallelFor(data) as item:
            d = dsl.importer(artifact_uri=item, artifact_class=Dataset)
        return publish_outputs(pcaps=p.output, validation=v.output, repaired_data=dsl.Collected(d.output),
                               output_uri=uri).output

    published = json.loads(_publish(pcaps=str(validation), validation=str(validation), data=encoded,
                                     uri=str(tmp_path / "published")).output)
    assert published["parquet"] >= 2 and (tmp_path / "published" / "data" / "fields.json").exists()


def test_encode_and_publish_with_s3_uris(kfp_local, s3_server, shared_data, tmp_path, monkeypatch):
    """Inputs on S3 (a real local S3 server): plan + encode download them; publish uploads."""
    import shutil

    from components.common import fetch, publish
    from netdiffusion.tracking.storage import list_uri, upload_dir

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)  # the task subprocesses inherit this environment
    local = tmp_path / "in"
    (local / "pcaps/facebook").mkdir(parents=True)
    shutil.copy(shared_data / "pcaps/facebook/facebook.pcap", local / "pcaps/facebook/")
    shutil.copy(shared_data / "ndpi_flow_labels.csv", local)
    (local / "manifest.csv").write_text("path,label,macro,source\npcaps/facebook/facebook.pcap,facebook,social,t\n")
    prefix = f"s3://{s3_server.bucket}/components-test/input"
    upload_dir(local, prefix)

    scratch = tmp_path / "tmp"  # the tasks' temp folder: what they download must not stay there
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    (shard,) = plan_shards_component(input_uri=prefix, classes=[], shards=4).output
    task = encode_shard(shard=shard, packets=32)
    assert task.outputs["Output"] == 2 and _flows(task.outputs["data"].path) == {"facebook": 2}
    assert not [p for p in scratch.iterdir() if p.name.startswith(("encode-", "manifest-"))]
    # the capture is named by its URI, not by a scratch path: the same input, the same flow ids
    table = pq.read_table(next(Path(task.outputs["data"].path).rglob("*.parquet")), columns=["flow_id", "source"])
    assert set(table.column("source").to_pylist()) == {f"{prefix}/pcaps/facebook/facebook.pcap"}
    again = encode_shard(shard=shard, packets=32)
    assert _ids(again.outputs["data"].path) == _ids(task.outputs["data"].path)

    published = f"s3://{s3_server.bucket}/components-test/published"
    assert publish(task.outputs["data"].path, published) >= 2
    assert "fields.json" in list_uri(published)
    assert (fetch(published, tmp_path / "back") / "fields.json").exists()
