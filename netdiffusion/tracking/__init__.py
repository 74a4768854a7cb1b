"""Artifact tracking: MLflow runs, S3 storage, the model registry and promotion. See docs/tracking.md.

Names are imported lazily (``from netdiffusion.tracking import log_refresh`` loads MLflow only then),
so stages that only need settings or S3 helpers do not pay for importing MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # settings
    "TrackingSettings": "settings",
    "ConfigError": "settings",
    "ui_hint": "settings",
    "local_tracking_uri": "settings",
    # storage
    "is_s3_uri": "storage",
    "split_s3_uri": "storage",
    "join_uri": "storage",
    "s3_client": "storage",
    "pyarrow_filesystem": "storage",
    "list_uri": "storage",
    "upload_dir": "storage",
    "download_dir": "storage",
    "upload_file": "storage",
    "download_file": "storage",
    "localize": "storage",
    "publish": "storage",
    "content_hash": "storage",
    # runs
    "configure": "runs",
    "log_refresh": "runs",
    "validation_clean": "runs",
    # model
    "log_model": "model",
    "load_model": "model",
    "load_model_dir": "model",
    "NetDiffusionModel": "model",
    # registry
    "promote": "registry",
    "DEFAULT_METRICS": "registry",
    "CHAMPION": "registry",
    "CHALLENGER": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netdiffusion.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(f"netdiffusion.tracking.{module}"), name)
