"""The trained model dir as an MLflow model: a ``netdiffusion`` pyfunc plus a plain directory loader.

The model dir (``model.json``, weights or LoRA adapter + base/ControlNet reference, ``timing.json``)
is stored unchanged as a pyfunc artifact, so two ways of using a registered model stay equivalent:

* ``mlflow.pyfunc.load_model("models:/NAME@champion").predict(df)`` with ``df`` columns
  ``class, count, seed`` -> one row per request with the output dataset path and flow counts;
* ``load_model_dir("models:/NAME@champion")`` -> local model dir for
  ``netdiffusion.model.generate.generate(model_dir, ...)`` (what the pipelines and the service do).

The pyfunc is logged "from code" (``pyfunc_entry.py``), nothing is pickled; the loading
environment needs the ``netdiffusion`` package installed (all project images have it).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

try:  # mlflow is a hard dependency, but keep ``import netdiffusion.tracking`` cheap if it is absent
    from mlflow.pyfunc import PythonModel as _PythonModel
except ImportError:  # pragma: no cover
    _PythonModel = object  # type: ignore[misc,assignment]

log = logging.getLogger(__name__)

ARTIFACT_KEY = "model_dir"
MODEL_ARTIFACT_PATH = "model"
_REQUIREMENTS = ("mlflow", "torch", "diffusers", "peft", "accelerate", "numpy", "pyarrow", "pandas", "scapy")


class NetDiffusionModel(_PythonModel):
    """pyfunc wrapper: generate flows per requested class with the stored model dir."""

    model_dir: str = ""

    def load_context(self, context: Any) -> None:
        self.model_dir = context.artifacts[ARTIFACT_KEY]

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would parse them
        """``model_input``: DataFrame ``class, count, seed``; ``params["output_dir"]`` where datasets go
        (default: a new temp dir). Returns ``class, count, seed, output, flows, packets`` per row."""
        import pandas as pd

        from netdiffusion.model.generate import generate

        frame = pd.DataFrame(model_input)
        missing = {"class", "count"} - set(frame.columns)
        if missing:
            raise ValueError(f"predict input needs columns class, count[, seed]; missing {sorted(missing)}")
        output_root = Path((params or {}).get("output_dir") or tempfile.mkdtemp(prefix="netdiffusion-generate-"))
        rows = []
        for i, record in enumerate(frame.to_dict("records")):
            class_name = str(record["class"])
            count = int(record["count"])
            seed = int(record.get("seed", 0) if pd.notna(record.get("seed", 0)) else 0)
            output = output_root / f"{i:04d}-{_safe(class_name)}"
            generate(self.model_dir, output, classes=[class_name], count=count, seed=seed)
            flows, packets = _count_flows(output)
            rows.append({"class": class_name, "count": count, "seed": seed, "output": str(output),
                         "flows": flows, "packets": packets})
        return pd.DataFrame(rows, columns=["class", "count", "seed", "output", "flows", "packets"])


def signature() -> Any:
    """Input ``class: string, count: long, seed: long``; output the per-request summary; param
    ``output_dir``."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "class"), ColSpec("long", "count"), ColSpec("long", "seed", required=False)])
    outputs = Schema([ColSpec("string", "class"), ColSpec("long", "count"), ColSpec("long", "seed"),
                      ColSpec("string", "output"), ColSpec("long", "flows"), ColSpec("long", "packets")])
    params = ParamSchema([ParamSpec("output_dir", "string", "")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def requirements() -> list[str]:
    """Pinned requirements of the loading environment (installed versions, no inference step)."""
    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def log_model(model_dir: str | os.PathLike, *, registered_model_name: str | None = None,
              name: str = MODEL_ARTIFACT_PATH) -> dict[str, Any]:
    """Log ``model_dir`` as a ``netdiffusion`` pyfunc in the active run (one is started if none);
    register it as a new version of ``registered_model_name`` if given.

    Returns ``{"model_uri", "model_id", "name", "version"}`` (``version`` None when not registered)."""
    import mlflow

    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{model_dir}: not a model directory (no model.json)")
    meta = json.loads(meta_path.read_text())
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    info_meta = {k: meta[k] for k in ("model_id", "backend", "classes", "prompts", "packets", "lora_weights")
                 if k in meta}
    # SD + LoRA: the adapter is in the dir; base model and ControlNet are references, recorded here
    info_meta.update({k: config[k] for k in ("preset", "base_model_path", "controlnet_path") if k in config})
    metadata = {"netdiffusion": info_meta}
    active = mlflow.active_run()
    run = active or mlflow.start_run(run_name=f"model-{model_dir.name}")
    try:
        with warnings.catch_warnings():
            # MLflow nags for an input example; giving one would run a whole generation at log time
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                artifacts={ARTIFACT_KEY: str(model_dir)},
                signature=signature(),
                pip_requirements=requirements(),
                metadata=metadata,
                registered_model_name=registered_model_name,
            )
    finally:
        if active is None:
            mlflow.end_run()
    version = getattr(info, "registered_model_version", None)
    log.info("logged model %s (run %s)%s", info.model_uri, run.info.run_id,
             f" as {registered_model_name} v{version}" if version else "")
    return {"model_uri": info.model_uri, "model_id": getattr(info, "model_id", None),
            "name": registered_model_name, "version": int(version) if version else None,
            "run_id": run.info.run_id}


def load_model_dir(uri: str | os.PathLike, dst: str | os.PathLike | None = None, *,
                   settings: Any = None) -> Path:
    """A local model dir for ``uri``: a local path, ``models:/NAME@alias|/VERSION``, ``runs:/...``,
    ``models:/m-<id>`` or an ``s3://`` copy of a model dir. Downloads into ``dst`` (temp dir if None)."""
    text = str(uri)
    if "://" not in text and not text.startswith("models:/") and not text.startswith("runs:/"):
        path = Path(text)
        if not (path / "model.json").exists():
            raise FileNotFoundError(f"{path}: not a model directory (no model.json)")
        return path
    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="netdiffusion-model-"))
    if text.startswith("s3://"):
        from netdiffusion.tracking.storage import download_dir

        root = download_dir(text, dst, settings)
    else:
        import mlflow

        _ensure_tracking(settings)
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=text, dst_path=str(dst)))
    return _find_model_dir(root, text)


def pinned_version_uri(uri: str, *, settings: Any = None) -> str | None:
    """``models:/NAME/VERSION`` that ``uri`` names now: the alias's current version for
    ``models:/NAME@ALIAS``, ``uri`` itself for a version; None for other URIs. A registry version
    never changes, so a copy downloaded for it can be kept (an alias moves: resolve it each time)."""
    text = str(uri)
    if not text.startswith("models:/"):
        return None
    body = text[len("models:/"):]
    if "@" in body:
        name, alias = body.split("@", 1)
        import mlflow

        _ensure_tracking(settings)
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        return f"models:/{name}/{version}"
    name, _, version = body.partition("/")
    return text if name and version.isdigit() else None


def load_model(uri: str, *, settings: Any = None) -> Any:
    """The pyfunc (``predict(DataFrame[class, count, seed])``) for a model URI."""
    import mlflow

    _ensure_tracking(settings)
    return mlflow.pyfunc.load_model(uri)


def _ensure_tracking(settings: Any) -> None:
    """Use ``settings`` if given; else keep what the process configured, or load the settings
    (env / ``out/mlflow.db``) rather than let MLflow fall back to a ``mlflow.db`` in the cwd."""
    import mlflow

    from netdiffusion.tracking.settings import TrackingSettings, require_store

    if settings is None and mlflow.is_tracking_uri_set():
        require_store(mlflow.get_tracking_uri())
        return
    settings = settings or TrackingSettings.load()
    settings.require_store()  # read-only use: never create an empty store that then has "no such model"
    settings.apply_env()  # read-only use: point MLflow at the store, create no experiment
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri or settings.tracking_uri)


def _find_model_dir(root: Path, uri: str) -> Path:
    """Inside a downloaded MLflow model, the artifact that holds ``model.json``."""
    if (root / "model.json").exists():
        return root
    mlmodel = root / "MLmodel"
    if mlmodel.exists():
        import yaml

        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        artifacts = flavors.get("python_function", {}).get("artifacts", {})
        entry = artifacts.get(ARTIFACT_KEY)
        if entry and (root / entry["path"] / "model.json").exists():
            return root / entry["path"]
    found = sorted(root.rglob("model.json"), key=lambda p: len(p.parts))
    if not found:
        raise FileNotFoundError(f"{uri}: downloaded to {root} but no model.json inside")
    return found[0].parent


def _count_flows(dataset: Path) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netdiffusion.dataset import shard_paths

    paths = shard_paths(dataset)
    if not paths:
        return 0, 0
    table = pa.concat_tables([pq.read_table(p, columns=["flow_id"]) for p in paths])
    return len(table.column("flow_id").unique()), table.num_rows


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
