"""Large jobs → ``generate`` pipeline runs on Kubeflow Pipelines.

Delegates to ``pipelines.submit`` (the pipeline package), imported only when a large job arrives:
the library, and the service's start-up, must not depend on kfp.
"""

from __future__ import annotations

import os
from typing import Any


def submit_generate(host: str, record: dict[str, Any], *, job_id: str, s3_uri: str | None) -> dict[str, Any]:
    """Submit one ``generate`` run for a job request; returns what the job row records about it."""
    try:
        from pipelines import submit as kfp_submit
    except ModuleNotFoundError as exc:
        raise RuntimeError("the pipelines package is not installed in this image; large jobs need it") from exc
    optional = {"seed": record.get("seed"), "packets": record.get("packets"), "format": record.get("format")}
    try:
        known = kfp_submit.pipeline_parameters("generate")
        arguments = kfp_submit.pipeline_arguments(
            "generate", classes=record["classes"], count=record["count"], model=record.get("model_ref"),
            output_uri=f"{s3_uri.rstrip('/')}/{job_id}" if s3_uri else None,
            extra={k: v for k, v in optional.items() if v is not None and k in known})
        run = kfp_submit.submit("generate", host, arguments, run_name=f"serve-{job_id}",
                                namespace=os.environ.get("KFP_NAMESPACE") or None)
    except SystemExit as exc:  # the pipeline helpers report bad arguments with SystemExit
        raise RuntimeError(str(exc)) from None
    result = {"pipeline_run_id": run["run_id"], "run_url": run.get("url"), "kfp_host": host}
    if s3_uri:
        result["uris"] = {"prefix": f"{s3_uri.rstrip('/')}/{job_id}/"}
    return result
