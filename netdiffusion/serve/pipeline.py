"""Large jobs → ``generate`` pipeline runs on Kubeflow Pipelines.

Delegates to ``pipelines.submit`` (the pipeline package), imported only when a large job arrives:
the library, and the service's start-up, must not depend on kfp.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger("netdiffusion.serve")

# pipeline parameter <- env variable set by the Helm chart's ConfigMap (JSON-decoded when JSON)
ENV_PARAMETERS = {
    "gpu_node_selector": "NETDIFFUSION_GPU_NODE_SELECTOR",
    "gpu_tolerations": "NETDIFFUSION_GPU_TOLERATIONS",
    "accelerator_type": "NETDIFFUSION_GPU_RESOURCE",
    "generate_gpus": "NETDIFFUSION_GPU_COUNT",
    "s3_secret": "NETDIFFUSION_S3_SECRET",
    "tracking_uri": "MLFLOW_TRACKING_URI",
}


def env_parameters(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Cluster placement settings (GPU pool, secrets, tracking) for the pipeline run, from env."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for param, var in ENV_PARAMETERS.items():
        raw = env.get(var)
        if raw:
            try:
                out[param] = json.loads(raw)
            except ValueError:
                out[param] = raw
    return out


def submit_generate(host: str, record: dict[str, Any], *, job_id: str, s3_uri: str | None) -> dict[str, Any]:
    """Submit one ``generate`` run for a job request; returns what the job row records about it."""
    try:
        from pipelines import submit as kfp_submit
    except ModuleNotFoundError as exc:
        raise RuntimeError("the pipelines package is not installed in this image; large jobs need it") from exc
    optional = {**env_parameters(), "seed": record.get("seed"), "packets": record.get("packets"),
                "format": record.get("format")}
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


FINISHED_OK = {"SUCCEEDED", "SKIPPED"}
FINISHED_BAD = {"FAILED", "CANCELED"}


def run_state(host: str, run_id: str) -> tuple[str, str | None]:
    """(state, error message) of a KFP run, e.g. ("RUNNING", None) or ("FAILED", "...")."""
    from pipelines import submit as kfp_submit

    run = kfp_submit.client(host, os.environ.get("KFP_NAMESPACE") or None).get_run(run_id)
    error = getattr(run, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    return str(getattr(run, "state", "") or "UNKNOWN").upper(), message


def poll_submitted(store: Any, host: str) -> int:
    """Move ``submitted`` jobs whose KFP run has finished to succeeded/failed; returns how many."""
    from netdiffusion.serve.store import FAILED, SUBMITTED, SUCCEEDED

    changed = 0
    for job in store.by_status(SUBMITTED):
        result = job.get("result") or {}
        run_id = result.get("pipeline_run_id")
        if not run_id:
            continue
        try:
            state, message = run_state(host, run_id)
        except Exception as exc:
            if getattr(exc, "status", None) is None:
                raise  # KFP unreachable: every run would fail alike; the poller logs it once and retries
            # KFP answered with an error for this run (deleted: 404): the others must still be followed
            reason = f"HTTP {exc.status} {getattr(exc, 'reason', '') or ''}".strip()
            store.update(job["id"], stage=f"pipeline run state unavailable: {reason}")
            log.warning("cannot read pipeline run %s of job %s: %s", run_id, job["id"], reason)
            continue
        if state in FINISHED_OK:
            store.finish(job["id"], SUCCEEDED, result={**result, "pipeline_state": state})
            changed += 1
        elif state in FINISHED_BAD:
            store.finish(job["id"], FAILED, error=f"pipeline run {run_id} {state.lower()}: {message or 'no message'}",
                         result={**result, "pipeline_state": state})
            changed += 1
        else:
            store.update(job["id"], stage=f"pipeline run {state.lower()}")
    return changed
