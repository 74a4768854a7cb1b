"""The FastAPI application: routes, auth, limits, quotas, error handling, metrics, request logs."""

from __future__ import annotations

import logging
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from netdiffusion.serve.auth import TokenStore
from netdiffusion.serve.config import ServeConfig
from netdiffusion.serve.lock import acquire as lock_state_dir
from netdiffusion.serve.lock import release as unlock_state_dir
from netdiffusion.serve.metrics import ServiceMetrics
from netdiffusion.serve.models import ModelNotFound, ModelReferenceInvalid, ModelSource, ModelUnavailable
from netdiffusion.serve.pipeline import PipelineSubmitter
from netdiffusion.serve.runner import expire_results, job_paths, public_result, remove_job_files
from netdiffusion.serve.store import CANCELLED, FAILED, SUBMITTED, SUCCEEDED, TERMINAL, JobStore
from netdiffusion.serve.worker import WorkerPool

log = logging.getLogger("netdiffusion.serve")

MAX_BODY_BYTES = 64 * 1024
API_VERSION = "v1"
BODY_TOO_LARGE = f"request body too large (limit {MAX_BODY_BYTES} bytes)"


class BodyLimit:
    """ASGI middleware: 413 once a request body passes ``limit`` bytes, whether it announces its
    length (``Content-Length``, refused up front) or streams it (``Transfer-Encoding: chunked``,
    counted as it arrives). The route reads the body before authentication runs, so an oversized
    body is refused without being buffered and before any token check."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = JSONResponse({"error": f"{BODY_TOO_LARGE} or bad Content-Length"}, status_code=413,
                                    headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise StarletteHTTPException(413, BODY_TOO_LARGE, headers={"Connection": "close"})
            return message

        await self.app(scope, limited, send)


class JobRequest(BaseModel):
    """What a team asks for: flows per class, packets per flow, an output format."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"classes": ["netflix", "zoom"], "count": 10, "packets": 32, "format": "pcap"}]})

    classes: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, description="traffic classes to generate (see GET /v1/classes)")
    count: int = Field(ge=1, description="flows per class")
    packets: int | None = Field(None, ge=1, description="packets per flow (default: the model's flow length)")
    format: Literal["pcap", "parquet", "nprint"] = Field(
        "pcap", description="pcap: repaired, validated pcaps per flow; parquet: the repaired dataset; "
                            "nprint: nPrint CSV per class")
    model: str | None = Field(None, max_length=256, description="model version, alias or models:/ URI "
                                                                "(default: the service's model)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed (same request + seed → same flows)")


class JobAccepted(BaseModel):
    id: str
    status: str
    target: Literal["local", "pipeline"]
    flows: int
    links: dict[str, str]


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "submitted", "cancelled"]
    stage: str
    progress: float
    error: str | None
    request: dict[str, Any]
    flows: int
    created: float
    started: float | None
    finished: float | None
    expired: float | None = Field(None, description="when the service removed the stored result "
                                                    "(result_retention_s after the job ended, or on DELETE)")
    result: dict[str, Any] | None
    links: dict[str, str]


class ErrorBody(BaseModel):
    error: str
    details: list[dict[str, Any]] | None = None
    request_id: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        401: "no bearer token", 403: "token not accepted", 404: "no such job (for this token)",
        410: "the job's stored result was removed (retention period or DELETE)",
        413: "request too large", 422: "invalid request", 429: "quota exceeded", 503: "not ready"}.items()
}


def _error_detail(err: dict[str, Any], body: Any, request: Request) -> dict[str, Any]:
    """One validation error as ``{field, message, type}``, worded for someone holding only curl."""
    kind = err.get("type")
    loc = [p for p in err.get("loc", ()) if p != "body"]
    message = str(err.get("msg", "invalid"))
    if kind == "json_invalid":  # loc is the offset where decoding failed, not a field
        pos = int(loc[0]) if loc and isinstance(loc[0], int) else 0
        offset = len(body[:pos].encode("utf-8", "replace")) if isinstance(body, str) else pos
        reason = (err.get("ctx") or {}).get("error") or "JSON decode error"
        return {"field": "body", "message": f"invalid JSON at byte {offset}: {reason}", "type": kind}
    if not loc and kind in ("dict_type", "model_type", "model_attributes_type"):
        content_type = request.headers.get("content-type") or "none"
        if "json" not in content_type.lower():
            message = (f"expected a JSON object; send it with Content-Type: application/json "
                       f"(got Content-Type: {content_type})")
        else:
            message = f"expected a JSON object: {message}"
    return {"field": ".".join(str(p) for p in loc) or "body", "message": message, "type": kind}


def _job_links(job_id: str) -> dict[str, str]:
    return {"self": f"/{API_VERSION}/jobs/{job_id}", "result": f"/{API_VERSION}/jobs/{job_id}/result"}


def _view(job: dict[str, Any], state_dir: Path) -> dict[str, Any]:
    request = {k: v for k, v in job["request"].items() if k not in ("model_ref", "model_packets")}
    result = job["result"]
    if result:  # no server paths (jobs recorded before runner.public_result cleaned them)
        result = public_result({k: v for k, v in result.items() if k != "archive"}, state_dir, job["id"])
    return {**{k: job[k] for k in ("id", "status", "stage", "progress", "error", "flows", "created",
                                   "started", "finished", "expired")},
            "request": request, "result": result, "links": _job_links(job["id"])}


bearer = HTTPBearer(auto_error=False, description="an API token from NETDIFFUSION_API_TOKENS")


def authenticate(request: Request,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The caller's token id; 401 without a token, 403 with one that is not accepted."""
    if creds is None or not creds.credentials:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    token_id = request.app.state.tokens.identify(creds.credentials)
    if token_id is None:
        raise HTTPException(403, "token not accepted")
    request.state.token_id = token_id
    return token_id


TokenId = Annotated[str, Depends(authenticate)]


def create_app(config: ServeConfig) -> FastAPI:
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tokens = TokenStore(config.tokens)
    store = JobStore(state_dir / "jobs.db")
    metrics = ServiceMetrics(store.counts)
    models = ModelSource(config.model, cache_dir=state_dir / "models", keep_versions=config.model_cache_versions)
    pool = WorkerPool(store, state_dir, workers=config.workers, job_threads=config.job_threads,
                      timeout_s=config.job_timeout_s, s3_uri=config.s3_uri, metrics=metrics)
    submitter = PipelineSubmitter(store, config.kfp_host, s3_uri=config.s3_uri, timeout_s=config.kfp_timeout_s,
                                  owner=pool.owner)

    stop_polling = threading.Event()

    def sweep_stale_jobs() -> None:
        """Fail running jobs whose process stopped beating (a replica sharing the DB died)."""
        while not stop_polling.wait(15.0):
            try:
                if lost := store.fail_stale():
                    log.warning("failed %d jobs that stopped beating", lost)
            except Exception as exc:  # noqa: BLE001 - a busy database must not stop the sweeper
                log.warning("sweeping stale jobs failed: %s", exc)

    def sweep_old_results() -> None:
        """Remove stored results of jobs that ended more than ``result_retention_s`` ago."""
        every = min(300.0, max(1.0, config.result_retention_s / 10))
        while not stop_polling.wait(every):
            try:
                if removed := expire_results(store, state_dir, config.result_retention_s):
                    log.info("removed the stored results of %d jobs past the retention period", removed,
                             extra={"retention_s": config.result_retention_s})
            except Exception as exc:  # noqa: BLE001 - a busy database or volume must not stop the sweeper
                log.warning("removing old results failed: %s", exc)

    def poll_pipeline_runs() -> None:
        """Follow jobs that became KFP runs until their runs finish (every ``pipeline_poll_s``)."""
        from netdiffusion.serve.pipeline import poll_submitted

        while not stop_polling.wait(config.pipeline_poll_s):
            try:
                poll_submitted(store, config.kfp_host, config.kfp_timeout_s)
            except Exception as exc:  # noqa: BLE001 - KFP briefly unreachable must not stop the poller
                log.warning("polling pipeline runs failed: %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        lock_state_dir(state_dir, pool.owner)  # before recovery: never two live services on one state dir
        failed, queued = store.recover(pool.owner)
        pool.start()
        submitter.start()
        for job_id in queued:  # each job back to where it runs: KFP for pipeline jobs, never locally
            job = store.get(job_id) or {}
            (submitter if job.get("request", {}).get("target") == "pipeline" else pool).submit(job_id)
        threading.Thread(target=sweep_stale_jobs, name="stale-sweeper", daemon=True).start()
        if config.result_retention_s > 0:
            threading.Thread(target=sweep_old_results, name="result-sweeper", daemon=True).start()
        if config.kfp_host:
            threading.Thread(target=poll_pipeline_runs, name="pipeline-poller", daemon=True).start()
        log.info("service started", extra={"state_dir": str(state_dir), "tokens": len(tokens),
                                           "model": config.model, "workers": config.workers,
                                           "recovered_failed": failed, "requeued": len(queued)})
        yield
        stop_polling.set()
        submitter.stop()
        pool.stop()
        unlock_state_dir(state_dir, pool.owner)
        log.info("service stopped")

    app = FastAPI(
        title="netdiffusion synthetic traffic service",
        version="1.0.0",
        description="Labelled, protocol-valid synthetic network traffic on request. Authenticate with "
                    "`Authorization: Bearer <token>`. Small jobs run in the service; large ones become "
                    "`generate` pipeline runs on Kubeflow Pipelines.",
        lifespan=lifespan,
    )
    app.state.config, app.state.store, app.state.pool, app.state.metrics = config, store, pool, metrics
    app.state.tokens = tokens

    # -- errors: always JSON, 4xx for anything the client sent ---------------------------------
    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [_error_detail(err, exc.body, request) for err in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        metrics.jobs_rejected.labels("invalid").inc() if request.url.path.endswith("/jobs") else None
        return JSONResponse({"error": f"invalid request: {summary}", "details": details,
                             "request_id": getattr(request.state, "request_id", None)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "request_id": getattr(request.state, "request_id", None)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"error": "internal error", "request_id": getattr(request.state, "request_id", None)},
                            status_code=500)

    # -- request body limit (innermost: its 413s are logged and counted by ``observe``) ---------
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)

    # -- request logging + metrics ---------------------------------------------------------------
    @app.middleware("http")
    async def observe(request: Request, call_next):  # noqa: ANN001, ANN202
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = request_id
        started = time.perf_counter()
        response: Response = await call_next(request)
        elapsed = time.perf_counter() - started
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        metrics.latency.labels(request.method, template).observe(elapsed)
        response.headers["X-Request-Id"] = request_id
        if template not in ("/healthz", "/readyz", "/metrics"):
            log.info("request", extra={"request_id": request_id, "method": request.method,
                                       "path": request.url.path, "route": template,
                                       "status": response.status_code, "ms": round(elapsed * 1000, 2),
                                       "token_id": getattr(request.state, "token_id", None)})
        return response

    # -- probes and metrics ------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"], summary="liveness: the process serves requests")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="readiness: job store writable, workers alive, tokens configured",
             responses={503: ERRORS[503]})
    def readyz() -> JSONResponse:
        """The model is reported but does not gate readiness: a fresh install has no champion yet,
        and the API must still answer (catalogue calls then say why with a 503 of their own)."""
        checks = {"store": store.writable(), "workers": pool.alive(), "tokens": len(tokens) > 0}
        try:
            models.info()
            model = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            model = str(exc)[:300]
        ok = all(checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks, "model": model},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- catalogue -----------------------------------------------------------------------------------
    def _model_info(model: str | None = None) -> dict[str, Any]:
        try:
            return models.info(model)
        except ModelReferenceInvalid as exc:
            raise HTTPException(422, str(exc)) from exc
        except ModelNotFound as exc:
            raise HTTPException(404 if models.configured else 503, str(exc)) from exc
        except ModelUnavailable as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from exc

    @app.get("/v1/classes", tags=["catalogue"], summary="traffic classes the model can generate",
             responses={k: ERRORS[k] for k in (401, 403, 404, 422, 503)})
    def list_classes(token_id: TokenId, model: Annotated[str | None, Query(max_length=256)] = None
                     ) -> dict[str, Any]:
        info = _model_info(model)
        return {"model": model or "default", "classes": info["classes"], "packets_per_flow": info["packets"]}

    @app.get("/v1/models", tags=["catalogue"], summary="registered models: aliases, versions, evaluation numbers",
             responses={k: ERRORS[k] for k in (401, 403, 503)})
    def list_models(token_id: TokenId) -> dict[str, Any]:
        try:
            return {"models": models.list_models()}
        except (ModelNotFound, ModelReferenceInvalid, ModelUnavailable) as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from exc

    # -- jobs ----------------------------------------------------------------------------------------
    @app.post("/v1/jobs", tags=["jobs"], status_code=202, response_model=JobAccepted,
              summary="request synthetic flows; returns a job id",
              responses={k: ERRORS[k] for k in (401, 403, 404, 413, 422, 429, 503)})
    def create_job(body: JobRequest, token_id: TokenId) -> JobAccepted:
        problems = []
        if len(body.classes) > config.max_classes:
            problems.append(f"classes: at most {config.max_classes} per request, got {len(body.classes)}")
        if len(set(body.classes)) != len(body.classes):
            problems.append("classes: duplicates are not allowed")
        if body.count > config.max_count:
            problems.append(f"count: at most {config.max_count} flows per class, got {body.count}")
        if body.packets is not None and body.packets > config.max_packets:
            problems.append(f"packets: at most {config.max_packets} packets per flow, got {body.packets}")
        if problems:
            metrics.jobs_rejected.labels("limit").inc()
            raise HTTPException(422, "; ".join(problems))
        try:
            reference = models.reference(body.model)
        except ModelReferenceInvalid as exc:
            metrics.jobs_rejected.labels("model").inc()
            raise HTTPException(422, str(exc)) from exc
        except ModelNotFound as exc:
            metrics.jobs_rejected.labels("model").inc()
            raise HTTPException(404 if models.configured else 503, str(exc)) from exc
        info = _model_info(body.model)
        unknown = [c for c in body.classes if c not in info["classes"]]
        if unknown:
            metrics.jobs_rejected.labels("class").inc()
            raise HTTPException(422, f"classes: unknown {unknown}; this model has {info['classes']}")
        if body.packets is not None and info["packets"] and body.packets > info["packets"]:
            raise HTTPException(422, f"packets: this model generates at most {info['packets']} packets per flow")
        flows = body.count * len(body.classes)
        target = "local"
        if flows > config.local_max_flows:
            if not config.kfp_host:
                metrics.jobs_rejected.labels("too_large").inc()
                raise HTTPException(413, f"{flows} flows is above this service's local limit of "
                                         f"{config.local_max_flows} and no Kubeflow Pipelines host is "
                                         "configured for large jobs; ask for fewer flows or split the request")
            local_only = ([f"format {body.format!r}"] if body.format != "pcap" else []) + (
                [f"packets {body.packets}"] if body.packets not in (None, info["packets"]) else [])
            if local_only:  # the generate pipeline writes pcaps of the model's flow length, nothing else
                metrics.jobs_rejected.labels("limit").inc()
                raise HTTPException(422, f"{', '.join(local_only)}: jobs above {config.local_max_flows} flows run "
                                         "as generate pipeline runs, which write pcaps with the model's flow length "
                                         f"({info['packets']} packets); leave these out or ask for fewer flows")
            target = "pipeline"
        record = {**body.model_dump(), "model_ref": reference, "model_packets": info["packets"], "target": target}
        job_id, reason = store.create_within_quota(token_id, record, flows, window_s=config.quota_window_s,
                                                   max_jobs=config.quota_jobs, max_flows=config.quota_flows)
        if job_id is None:
            metrics.jobs_rejected.labels("quota").inc()
            raise HTTPException(429, reason, headers={"Retry-After": str(int(config.quota_window_s))})
        # both kinds are queued; pipeline jobs are submitted to KFP by the submitter's threads, so a
        # slow KFP API never holds this request (or the thread pool that health probes need)
        (submitter if target == "pipeline" else pool).submit(job_id)
        status = "queued"
        metrics.jobs_submitted.labels(target, body.format).inc()
        log.info("job accepted", extra={"job_id": job_id, "token_id": token_id, "flows": flows, "target": target})
        return JobAccepted(id=job_id, status=status, target=target, flows=flows, links=_job_links(job_id))

    def _owned(job_id: str, token_id: str) -> dict[str, Any]:
        job = store.get(job_id) if len(job_id) <= 64 else None
        if job is None or job["token_id"] != token_id:
            raise HTTPException(404, f"job {job_id} not found")
        return job

    @app.get("/v1/jobs", tags=["jobs"], summary="this token's recent jobs", response_model=list[JobView],
             responses={k: ERRORS[k] for k in (401, 403, 422)})
    def list_jobs(token_id: TokenId, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        return [_view(j, state_dir) for j in store.list(token_id, limit)]

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="status, progress and error of a job",
             response_model=JobView, responses={k: ERRORS[k] for k in (401, 403, 404)})
    def get_job(job_id: str, token_id: TokenId) -> dict[str, Any]:
        return _view(_owned(job_id, token_id), state_dir)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], response_model=JobView,
                summary="cancel a queued or running job; of an ended job, remove its stored result",
                responses={502: {"model": ErrorBody, "description": "Kubeflow Pipelines did not terminate the run"},
                           **{k: ERRORS[k] for k in (401, 403, 404)}})
    def delete_job(job_id: str, token_id: TokenId) -> dict[str, Any]:
        """Cancel: the job ends as ``cancelled`` (its process stops, what it made is removed; a
        pipeline job's KFP run is terminated first). Ended jobs keep their record (quotas count it)
        but their stored files are removed at once (``expired`` is set; S3 copies stay)."""
        job = _owned(job_id, token_id)
        if job["status"] == SUBMITTED:  # a KFP run exists: end it before saying the job is cancelled
            from netdiffusion.serve.pipeline import terminate_run

            run_id = (job["result"] or {}).get("pipeline_run_id")
            try:
                if run_id and config.kfp_host:
                    terminate_run(config.kfp_host, run_id, config.kfp_timeout_s)
            except Exception as exc:  # noqa: BLE001 - the client gets why; the job stays submitted
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise HTTPException(502, f"could not terminate pipeline run {run_id}: {text}; try again") from exc
        if job["status"] in TERMINAL:
            if not job.get("expired"):
                remove_job_files(state_dir, job_id)
                store.update(job_id, expired=time.time())
        elif (before := store.cancel(job_id)) is not None:
            pool.cancel(job_id)
            log.info("job cancelled", extra={"job_id": job_id, "token_id": token_id, "was": before})
        return _view(store.get(job_id) or job, state_dir)

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"],
             summary="download the result (zip or tar stream), or its S3 URIs",
             responses={200: {"content": {"application/zip": {}, "application/x-tar": {}}},
                        409: {"model": ErrorBody, "description": "job not finished or failed"},
                        **{k: ERRORS[k] for k in (401, 403, 404, 410, 422)}})
    def get_result(job_id: str, token_id: TokenId,
                   archive: Annotated[Literal["zip", "tar", "uris"], Query()] = "zip") -> Response:
        job = _owned(job_id, token_id)
        if job["status"] == FAILED:
            raise HTTPException(409, f"job failed: {job['error']}")
        if job["status"] == CANCELLED:
            raise HTTPException(409, "job was cancelled: it has no result")
        if job["status"] != SUCCEEDED:
            raise HTTPException(409, f"job is {job['status']} ({job['progress']:.0%}); try again later")
        result = job["result"] or {}
        paths = job_paths(state_dir, job_id)
        if job.get("expired") and not result.get("uris") and job["request"].get("target", "local") == "local":
            raise HTTPException(410, f"the result of job {job_id} was removed from the service at "
                                     f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(job['expired']))} "
                                     "(results are kept for NETDIFFUSION_SERVE_RESULT_RETENTION_S = "
                                     f"{config.result_retention_s:g} s after a job ends, or until DELETE)")
        if archive == "uris" or (not paths["archive"].exists() and result.get("uris")):
            if not result.get("uris"):
                raise HTTPException(404, "this job has no S3 URIs (results are stored locally); use archive=zip")
            return JSONResponse({"id": job_id, "uris": result["uris"]})
        if archive == "zip":
            if not paths["archive"].exists():
                raise HTTPException(404, f"result of job {job_id} is no longer stored")
            return FileResponse(paths["archive"], media_type="application/zip",
                                filename=f"netdiffusion-{job_id}.zip")
        if not paths["output"].exists():
            raise HTTPException(404, f"result of job {job_id} is no longer stored")
        return StreamingResponse(_tar_stream(paths["output"]), media_type="application/x-tar",
                                 headers={"Content-Disposition": f'attachment; filename="netdiffusion-{job_id}.tar"'})

    return app


class _Chunks:
    """A write-only file object that collects what tarfile writes, so it can be yielded as it grows."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _tar_stream(root: Path) -> Iterator[bytes]:
    """Stream a tar of ``root`` without building it on disk or in memory first."""
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|") as tar:  # type: ignore[arg-type]
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            tar.add(path, arcname=path.relative_to(root).as_posix())
            yield sink.take()
    yield sink.take()
