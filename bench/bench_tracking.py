"""Tracking overhead of one refresh against the local default store (sqlite + local artifacts).

Builds a tiny real refresh (synthetic field-table dataset → ``train`` tiny → ``generate`` →
quick ``evaluate``), then times ``log_refresh`` (with model registration), ``promote`` and
``load_model_dir("models:/…@champion")``. Also times the design choice in ``log_refresh``: logging
the model *before* the metrics, because MLflow 3's ``log_model`` fetches the history of every metric
already in the run. Run alone: ``python -m bench.run_all tracking``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path


def main() -> dict:
    import mlflow

    from netdiffusion.evaluate import evaluate
    from netdiffusion.model.generate import generate
    from netdiffusion.model.testing import write_synthetic_dataset
    from netdiffusion.model.train import train
    from netdiffusion.tracking import (
        TrackingSettings,
        configure,
        load_model_dir,
        log_model,
        log_refresh,
        promote,
    )
    from netdiffusion.tracking.runs import _log_metrics, numeric_leaves, read_json

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    data = write_synthetic_dataset(root / "data", flows=6, seed=0)
    heldout = write_synthetic_dataset(root / "heldout", flows=6, seed=1)
    train(data, root / "model", backend="native", config="tiny", seed=0)
    stats = generate(root / "model", root / "generated", count=4, seed=0)
    evaluate(heldout, root / "generated", data, root / "evaluation", quick=True, models=["rf"], seed=0)
    metrics = numeric_leaves(read_json(root / "evaluation"))

    settings = TrackingSettings.load(out=root / "out", env={}, experiment="bench", model_name="bench")
    result: dict = {"evaluation_metrics": len(metrics)}
    t0 = time.perf_counter()
    run_id = log_refresh("bench", settings=settings, params={"count": 4}, dataset_dir=data,
                         model_dir=root / "model", generate_stats=stats, generated_dir=root / "generated",
                         validation_report={"totals": {"files": 8, "files_failed": 0}, "failed": []},
                         evaluation_dir=root / "evaluation")
    result["log_refresh_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    decision = promote("bench", run_id=run_id, settings=settings)
    result["promote_s"] = round(time.perf_counter() - t0, 2)
    result["promoted"] = decision["promoted"]
    t0 = time.perf_counter()
    load_model_dir("models:/bench@champion", root / "download")
    result["load_model_dir_s"] = round(time.perf_counter() - t0, 2)

    # model logged after vs before the evaluation metrics (what log_refresh avoids)
    configure(settings)
    client = mlflow.MlflowClient()
    for order in ("model_first", "metrics_first"):
        with mlflow.start_run(run_name=order) as run:
            t0 = time.perf_counter()
            if order == "metrics_first":
                _log_metrics(client, run.info.run_id, metrics)
            log_model(root / "model")
            if order == "model_first":
                _log_metrics(client, run.info.run_id, metrics)
            result[f"{order}_s"] = round(time.perf_counter() - t0, 2)
    result["ui_hint"] = f"mlflow ui --backend-store-uri {settings.tracking_uri}"
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
