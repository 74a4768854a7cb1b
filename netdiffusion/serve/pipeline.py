"""Large jobs → ``generate`` pipeline runs on Kubeflow Pipelines.

Delegates to ``pipelines.submit`` (the pipeline package), imported only when a large job arrives:
the library, and the service's start-up, must not depend on kfp.

Submission happens off the request path: ``POST /v1/jobs`` stores the job as ``queued`` and hands
it to the :class:`PipelineSubmitter`'s threads, so a slow or hung KFP API never holds a request
thread (every KFP call is bounded by ``kfp_timeout_s`` as well). A job being submitted is
``running`` (claimed by this host, heartbeat kept), then ``submitted`` with its run id, or
``failed`` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from typing import Any

log = logging.getLogger("netdiffusion.serve")

# pipeline parameter <- env variable set by the Helm chart's ConfigMap (JSON-decoded when JSON)
ENV_PARAMETERS = {
    "gpu_node_selector": "NETDIFFUSION_GPU_NODE_SELECTOR",
    "gpu_tolerations": "NETDIFFUSION_GPU_TOLERATIONS",
    "accelerator_type": "NETDIFFUSION_GPU_RESOURCE",
    "generate_gpus": "NETDIFFUSION_GPU_COUNT",
    "s3_secret": "NETDIFFUSION_S3_SECRET",
    "settings_config_map": "NETDIFFUSION_SETTINGS_CONFIG_MAP",
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


def submit_generate(host: str, record: dict[str, Any], *, job_id: str, s3_uri: str | None,
                    timeout_s: float | None = None) -> dict[str, Any]:
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
                                namespace=os.environ.get("KFP_NAMESPACE") or None, timeout_s=timeout_s)
    except SystemExit as exc:  # the pipeline helpers report bad arguments with SystemExit
        raise RuntimeError(str(exc)) from None
    result = {"pipeline_run_id": run["run_id"], "run_url": run.get("url"), "kfp_host": host}
    if s3_uri:
        result["uris"] = {"prefix": f"{s3_uri.rstrip('/')}/{job_id}/"}
    return result


FINISHED_OK = {"SUCCEEDED", "SKIPPED"}
FINISHED_BAD = {"FAILED", "CANCELED"}


def run_state(host: str, run_id: str, timeout_s: float | None = None) -> tuple[str, str | None]:
    """(state, error message) of a KFP run, e.g. ("RUNNING", None) or ("FAILED", "...")."""
    from pipelines import submit as kfp_submit

    kfp_client = kfp_submit.client(host, os.environ.get("KFP_NAMESPACE") or None, timeout_s)
    run = kfp_submit.call(host, kfp_client, "get_run", run_id)
    error = getattr(run, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    return str(getattr(run, "state", "") or "UNKNOWN").upper(), message


def terminate_run(host: str, run_id: str, timeout_s: float | None = None) -> None:
    """Ask KFP to terminate a run (a cancelled pipeline job); raises what the client raises."""
    from pipelines import submit as kfp_submit

    kfp_client = kfp_submit.client(host, os.environ.get("KFP_NAMESPACE") or None, timeout_s)
    kfp_submit.call(host, kfp_client, "terminate_run", run_id)


def poll_submitted(store: Any, host: str, timeout_s: float | None = None) -> int:
    """Move ``submitted`` jobs whose KFP run has finished to succeeded/failed; returns how many."""
    from netdiffusion.serve.store import FAILED, SUBMITTED, SUCCEEDED

    changed = 0
    for job in store.by_status(SUBMITTED):
        result = job.get("result") or {}
        run_id = result.get("pipeline_run_id")
        if not run_id:
            continue
        try:
            state, message = run_state(host, run_id, timeout_s)
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


class PipelineSubmitter:
    """A few threads that turn queued pipeline jobs into KFP runs (see the module docstring)."""

    def __init__(self, store: Any, host: str | None, *, s3_uri: str | None, timeout_s: float, owner: str,
                 threads: int = 4) -> None:
        self.store = store
        self.host = host
        self.s3_uri = s3_uri
        self.timeout_s = timeout_s
        self.owner = owner
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, name=f"pipeline-submitter-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._submit(job_id)
            except Exception:  # noqa: BLE001 - a submitter thread must survive any one job
                log.exception("pipeline submission of job %s failed", job_id)

    def _submit(self, job_id: str) -> None:
        from netdiffusion.serve.store import FAILED, HEARTBEAT_S

        if not self.store.claim(job_id, self.owner):
            return  # no longer queued (another replica took it)
        job = self.store.get(job_id)
        if not self.host:
            self.store.finish(job_id, FAILED, error="pipeline submission failed: no Kubeflow Pipelines host is "
                                                    "configured for large jobs; ask for fewer flows")
            return
        self.store.update(job_id, stage="submitting pipeline run")
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["run"] = submit_generate(self.host, job["request"], job_id=job_id, s3_uri=self.s3_uri,
                                                 timeout_s=self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - the job row must say why
                outcome["error"] = exc

        worker = threading.Thread(target=work, name=f"submit-{job_id[:8]}", daemon=True)
        worker.start()
        while worker.is_alive():  # keep the claim alive: other replicas fail jobs that stop beating
            worker.join(HEARTBEAT_S)
            if worker.is_alive():
                self.store.beat(job_id)
        if "run" in outcome:
            run_id = outcome["run"]["pipeline_run_id"]
            if not self.store.mark_submitted(job_id, outcome["run"]):  # cancelled while submitting
                log.info("job cancelled while its run was submitted: terminating the run",
                         extra={"job_id": job_id, "run_id": run_id})
                try:
                    terminate_run(self.host, run_id, self.timeout_s)
                except Exception as exc:  # noqa: BLE001 - said in the log; the job stays cancelled
                    log.error("terminating pipeline run %s of cancelled job %s failed: %s", run_id, job_id, exc)
                return
            log.info("pipeline run submitted", extra={"job_id": job_id, "run_id": run_id})
            return
        exc = outcome.get("error") or RuntimeError("no outcome")
        text = str(exc).splitlines()[0] if str(exc) else ""
        self.store.finish(job_id, FAILED, error=f"pipeline submission failed: {type(exc).__name__}: {text}"[:2000])
        log.error("pipeline submission failed", extra={"job_id": job_id, "error": text})
