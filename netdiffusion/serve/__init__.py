"""The synthetic data service: an HTTP API in front of generate → repair → validate.

Teams ask for labelled synthetic traffic (classes, flows per class, packets per flow, output
format) and get a job id; small jobs run in the service's own worker pool, large ones become
``generate`` pipeline runs on Kubeflow. Job state lives in SQLite under the state directory so
that it survives restarts. ``create_app`` builds the FastAPI application; ``netdiffusion serve``
runs it under uvicorn.
"""

from __future__ import annotations

from netdiffusion.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig):  # noqa: ANN201 - FastAPI imported lazily
    """Build the FastAPI app (imported lazily so ``import netdiffusion.serve`` stays cheap)."""
    from netdiffusion.serve.app import create_app as _create_app

    return _create_app(config)
