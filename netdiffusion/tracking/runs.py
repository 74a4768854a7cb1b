"""Log a whole refresh run to MLflow: params, prompts, loss curves, stage stats, every evaluation metric.

One parent run per refresh, one nested run per stage (train / generate / repair / validate /
evaluate) so the UI can compare stages across refreshes, with the evaluation metrics also on the
parent under their ``report.json`` key (``similarity.overall.jsd``...), because promotion compares
parent runs by exactly those keys. Stage inputs may be dicts or paths to JSON files, and any of them
may be missing: a run that stopped after training is still worth recording.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netdiffusion.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

# run tags read back by promotion and by the service
TAG_KIND = "netdiffusion.kind"
TAG_VALIDATION_CLEAN = "netdiffusion.validation.clean"
TAG_DATASET_URI = "netdiffusion.dataset.uri"
TAG_DATASET_HASH = "netdiffusion.dataset.hash"
TAG_MODEL_NAME = "netdiffusion.model.name"
TAG_MODEL_VERSION = "netdiffusion.model.version"
TAG_MODEL_URI = "netdiffusion.model.uri"

_MAX_PARAM_VALUE = 6000
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_BAD_KEY_CHARS = re.compile(r"[^\w.\- :/]")


# ------------------------------------------------------------------------------------- set-up
def configure(settings: TrackingSettings | None = None) -> str:
    """Point MLflow at the configured store and return the experiment id (created if missing).

    With local tracking (sqlite/file) the experiment is created with an explicit artifact location
    (S3 bucket or ``<out>/mlartifacts``), otherwise MLflow would write ``./mlruns`` wherever the
    process happens to run."""
    import mlflow

    from netdiffusion.tracking.settings import TrackingSettings

    settings = settings or TrackingSettings.load()
    settings.apply_env()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        location = None if settings.is_remote_tracking else settings.artifact_root
        try:
            experiment_id = client.create_experiment(settings.experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created concurrently by another process
            experiment = client.get_experiment_by_name(settings.experiment)
            if experiment is None:
                raise
            experiment_id = experiment.experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# ------------------------------------------------------------------------------------ helpers
def metric_key(name: str) -> str:
    """A name MLflow accepts as a metric/param key (``/ \\w . - : space`` only, ≤ 250 chars)."""
    return _BAD_KEY_CHARS.sub("_", name)[:250]


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists of scalars are kept as leaves."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = obj
    return out


def numeric_leaves(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number (bools as 0/1) of a nested dict, keyed by its dotted path."""
    out: dict[str, float] = {}
    for key, value in flatten(obj, prefix).items():
        if isinstance(value, bool):
            out[metric_key(key)] = float(value)
        elif isinstance(value, int | float) and math.isfinite(float(value)):
            out[metric_key(key)] = float(value)
    return out


def read_json(value: str | os.PathLike | Mapping | None) -> dict[str, Any] | None:
    """A dict given directly or as a path to a JSON file; a directory means its ``report.json``."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    path = Path(value)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        log.warning("%s: not found, not logged", path)
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        log.warning("%s: not valid JSON (%s), not logged", path, exc)
        return None
    return data if isinstance(data, dict) else {"value": data}


def read_train_metrics(path: str | os.PathLike) -> list[tuple[int, dict[str, float]]]:
    """``metrics.jsonl`` -> ``[(step, {name: value})]``; ``step``/``epoch``/line number as the step."""
    rows: list[tuple[int, dict[str, float]]] = []
    bad = 0
    with open(path) as fh:
        for line_no, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if not isinstance(record, dict):
                bad += 1
                continue
            step = record.get("step", record.get("iteration", record.get("epoch", line_no)))
            values = {k: v for k, v in numeric_leaves(record).items() if k not in ("step", "iteration")}
            rows.append((int(step) if isinstance(step, int | float) else line_no, values))
    if bad:
        log.warning("%s: skipped %d unreadable lines", path, bad)
    return rows


def validation_clean(report: Mapping[str, Any] | None) -> bool:
    """Whether a ``netdiffusion validate`` report says every pcap passed.

    ``validate_dir`` writes ``{"totals": {"files", "files_failed", ...}, "failed": [files], ...}``:
    clean means files were checked and none failed. Other shapes are read too: an explicit verdict
    (``clean``/``ok``/``passed``/``valid`` booleans, top level or in ``summary``/``totals``), or failure
    counters/lists (``failed``, ``files_failed``, ``invalid``, ``errors``...) that must all be zero/empty.
    No report, nothing recognisable in it, or zero files checked is *not* clean: promotion must not
    trust output nobody checked."""
    if not report:
        return False
    scopes = [report] + [report[k] for k in ("summary", "totals", "overall") if isinstance(report.get(k), Mapping)]
    for scope in scopes:
        if isinstance(scope.get("files"), int | float) and not isinstance(scope.get("files"), bool) \
                and scope["files"] == 0:
            return False
    for scope in scopes:
        for key in ("clean", "ok", "passed", "valid", "all_valid"):
            if isinstance(scope.get(key), bool):
                return bool(scope[key])
    failures = ("failed", "files_failed", "failures", "invalid", "errors", "error_count", "failed_files")
    seen = False
    for scope in scopes:
        for key in failures:
            value = scope.get(key)
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                seen = True
                if value != 0:
                    return False
            elif isinstance(value, list):
                seen = True
                if value:
                    return False
    return seen


def dataset_summary(directory: str | os.PathLike) -> Any:
    """Per-class flow/packet counts of a Parquet dataset as a DataFrame (reads two columns only)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netdiffusion.dataset import shard_paths

    paths = shard_paths(directory)
    if not paths:
        raise FileNotFoundError(f"{directory}: no Parquet shards")
    tables = [pq.read_table(p, columns=["label", "flow_id"]) for p in paths]
    table = pa.concat_tables(tables)
    grouped = table.group_by("label").aggregate([("flow_id", "count_distinct"), ("flow_id", "count")])
    frame = grouped.to_pandas().rename(columns={"flow_id_count_distinct": "flows", "flow_id_count": "packets"})
    return pd.DataFrame(frame.sort_values("label").reset_index(drop=True))


def class_prompts(model_json: Mapping[str, Any]) -> dict[str, str]:
    """The class ↔ prompt table of a ``model.json`` (``prompts`` mapping, or per-class records)."""
    prompts = model_json.get("prompts")
    if isinstance(prompts, Mapping):
        return {str(k): str(v) for k, v in prompts.items()}
    table: dict[str, str] = {}
    classes = model_json.get("classes")
    if isinstance(classes, list):
        for i, item in enumerate(classes):
            if isinstance(item, Mapping) and "prompt" in item:
                table[str(item.get("name", item.get("class", i)))] = str(item["prompt"])
    return table


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    entities = []
    for key, value in flatten(dict(params)).items():
        text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
        entities.append(Param(metric_key(key), text[:_MAX_PARAM_VALUE]))
    for i in range(0, len(entities), _PARAM_BATCH):
        client.log_batch(run_id, params=entities[i : i + _PARAM_BATCH])


def _log_metrics(client: Any, run_id: str, values: Mapping[str, float], step: int = 0,
                 timestamp: int | None = None) -> None:
    from mlflow.entities import Metric

    stamp = timestamp or int(time.time() * 1000)
    entities = [Metric(k, float(v), stamp, step) for k, v in values.items()]
    for i in range(0, len(entities), _METRIC_BATCH):
        client.log_batch(run_id, metrics=entities[i : i + _METRIC_BATCH])


def _log_series(client: Any, run_id: str, rows: Iterable[tuple[int, Mapping[str, float]]], prefix: str) -> int:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    entities = [Metric(metric_key(f"{prefix}{k}"), float(v), stamp, step) for step, values in rows
                for k, v in values.items()]
    for i in range(0, len(entities), _METRIC_BATCH):
        client.log_batch(run_id, metrics=entities[i : i + _METRIC_BATCH])
    return len(entities)


# ------------------------------------------------------------------------------------ the run
def log_refresh(
    run_name: str,
    *,
    settings: TrackingSettings | None = None,
    params: Mapping[str, Any] | None = None,
    dataset_uri: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    train_metrics_jsonl: str | os.PathLike | None = None,
    generate_stats: Mapping[str, Any] | str | os.PathLike | None = None,
    generated_dir: str | os.PathLike | None = None,
    repair_report: Mapping[str, Any] | str | os.PathLike | None = None,
    validation_report: Mapping[str, Any] | str | os.PathLike | None = None,
    evaluation_dir: str | os.PathLike | None = None,
    register: bool = True,
    model_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record one refresh run (see module doc) and return the parent run id.

    With ``model_dir`` and ``register``, the model is logged as an MLflow model and registered as a
    new version of ``model_name`` (default: the settings' ``model_name``); its version number is in
    the run tag ``netdiffusion.model.version``."""
    import mlflow

    from netdiffusion.tracking.model import log_model
    from netdiffusion.tracking.settings import TrackingSettings
    from netdiffusion.tracking.storage import content_hash

    settings = settings or TrackingSettings.load()
    configure(settings)
    client = mlflow.MlflowClient()
    model_json = _read_model_json(model_dir)
    validation = read_json(validation_report)
    evaluation = read_json(evaluation_dir) if evaluation_dir else None
    clean = validation_clean(validation)

    with mlflow.start_run(run_name=run_name) as parent:
        run_id = parent.info.run_id
        run_tags = {TAG_KIND: "refresh", TAG_VALIDATION_CLEAN: str(clean).lower(), **(tags or {})}
        all_params: dict[str, Any] = dict(params or {})
        if dataset_uri or dataset_dir:
            all_params.setdefault("dataset.uri", str(dataset_uri or Path(dataset_dir).resolve()))
            try:
                all_params.setdefault("dataset.hash", content_hash(dataset_dir or dataset_uri, settings))
            except Exception as exc:  # noqa: BLE001 (an unhashable input must not lose the whole run)
                log.warning("%s: no content hash (%s)", dataset_dir or dataset_uri, exc)
                all_params.setdefault("dataset.hash", "unavailable")
            run_tags[TAG_DATASET_URI] = str(all_params["dataset.uri"])
            run_tags[TAG_DATASET_HASH] = str(all_params["dataset.hash"])
        if model_json:
            all_params.setdefault("model.backend", model_json.get("backend", ""))
            classes = [c if isinstance(c, str) else c.get("name", str(c)) for c in model_json.get("classes", [])]
            all_params.setdefault("classes", ",".join(map(str, classes)))
            for key in ("packets", "packets_per_flow", "seed"):
                if key in model_json:
                    all_params.setdefault(f"model.{key}", model_json[key])
            if isinstance(model_json.get("config"), Mapping):
                all_params.setdefault("model.config", model_json["config"])
        _log_params(client, run_id, all_params)
        mlflow.set_tags(run_tags)

        if dataset_dir:
            _log_dataset(dataset_dir, str(all_params.get("dataset.uri")), "training", "train-dataset")
        if model_json:
            prompts = class_prompts(model_json)
            mlflow.log_dict({"prompts": prompts, "classes": model_json.get("classes", [])}, "prompts.json")
            mlflow.log_dict(model_json, "model/model.json")

        # ---- model, before any metric: MLflow 3's log_model links every metric already in the run to
        # the logged model with one get_metric_history request per metric (~830 requests, 16.9 s of
        # a 21.2 s refresh against the test mlflow server; see docs/tracking.md)
        if model_dir:
            name = (model_name or settings.model_name) if register else None
            info = log_model(model_dir, registered_model_name=name)
            mlflow.set_tag(TAG_MODEL_URI, info["model_uri"])
            if info.get("version"):
                mlflow.set_tags({TAG_MODEL_NAME: name, TAG_MODEL_VERSION: str(info["version"])})

        # ---- train: loss curves
        if train_metrics_jsonl or (model_dir and (Path(model_dir) / "metrics.jsonl").exists()):
            path = Path(train_metrics_jsonl) if train_metrics_jsonl else Path(model_dir) / "metrics.jsonl"
            with mlflow.start_run(run_name=f"{run_name}/train", nested=True) as child:
                if path.exists():
                    rows = read_train_metrics(path)
                    n = _log_series(client, child.info.run_id, rows, "train.")
                    _log_series(client, run_id, rows, "train.")
                    log.info("logged %d training metric points from %s", n, path)
            if path.exists():  # artifacts on the parent: one place to look for a refresh's files
                mlflow.log_artifact(str(path), "train")
            if model_dir and (Path(model_dir) / "timing.json").exists():
                mlflow.log_artifact(str(Path(model_dir) / "timing.json"), "train")

        # ---- generate / repair / validate: stats as metrics, raw JSON as artifacts
        for stage, value in (("generate", generate_stats), ("repair", repair_report),
                             ("validate", validation)):
            data = validation if stage == "validate" else read_json(value)
            if data is None:
                continue
            with mlflow.start_run(run_name=f"{run_name}/{stage}", nested=True) as child:
                values = numeric_leaves(data, stage)
                _log_metrics(client, child.info.run_id, values)
                _log_metrics(client, run_id, values)
                if stage == "validate":
                    mlflow.set_tag(TAG_VALIDATION_CLEAN, str(clean).lower())
                if stage == "generate" and generated_dir:
                    _log_dataset(generated_dir, str(generated_dir), "generated", "generated")
            mlflow.log_dict(data, f"{stage}/report.json")

        # ---- evaluate: every metric, per class in nested runs, report + PNGs as artifacts
        if evaluation is not None:
            values = numeric_leaves(evaluation)
            _log_metrics(client, run_id, values)
            with mlflow.start_run(run_name=f"{run_name}/evaluate", nested=True) as child:
                # the per-field table (~9 numbers x fields) stays on the parent only: half the rows
                _log_metrics(client, child.info.run_id,
                             {k: v for k, v in values.items() if ".per_field." not in k})
                for class_name, class_values in _per_class(evaluation).items():
                    with mlflow.start_run(run_name=f"{run_name}/evaluate/{class_name}", nested=True) as cls_run:
                        mlflow.set_tag("netdiffusion.class", class_name)
                        _log_metrics(client, cls_run.info.run_id, class_values)
            if Path(evaluation_dir).is_dir():
                mlflow.log_artifacts(str(evaluation_dir), "evaluation")
            else:  # a report.json path
                mlflow.log_artifact(str(evaluation_dir), "evaluation")

    log.info("MLflow run %s (%s) logged", run_id, run_name)
    return run_id


def _read_model_json(model_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    if not model_dir:
        return None
    path = Path(model_dir) / "model.json"
    if not path.exists():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no model.json)")
    return json.loads(path.read_text())


def _log_dataset(directory: str | os.PathLike, source: str, context: str, name: str) -> None:
    """Record a dataset as a run input: its per-class summary, with the dataset URI as source."""
    import mlflow

    try:
        summary = dataset_summary(directory)
    except (FileNotFoundError, OSError, ValueError) as exc:
        log.warning("%s: dataset not logged as input (%s)", directory, exc)
        return
    with warnings.catch_warnings():  # source-type ambiguity and int-column hints: noise here
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(summary, source=source, name=name)
        mlflow.log_input(dataset, context=context)


def _per_class(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per-class metric blocks of an evaluation report (``similarity.per_class.<class>...``)."""
    out: dict[str, dict[str, float]] = {}
    for section_name, section in report.items():
        if not isinstance(section, Mapping):
            continue
        for key in ("per_class", "classes", "by_class"):
            block = section.get(key)
            if isinstance(block, Mapping):
                for class_name, values in block.items():
                    out.setdefault(str(class_name), {}).update(numeric_leaves(values, str(section_name)))
    return out
