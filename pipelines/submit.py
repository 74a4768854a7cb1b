"""Submit compiled pipelines to a Kubeflow Pipelines API (``make submit`` / ``make schedule``).

With a host, the compiled IR (``pipelines/compiled/<name>.yaml``, compiled on the fly if missing) is
sent with ``kfp.Client(host=...).create_run_from_pipeline_package`` or ``create_recurring_run``.
Without one, ``make submit`` runs the same pipeline locally through ``pipelines.local``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("netdiffusion.pipelines")

COMPILED = Path(__file__).resolve().parent / "compiled"
DEFAULT_MODEL = "models:/netdiffusion@champion"
# every KFP API call: connect within min(this, 10 s), the answer within this (env or --kfp-timeout)
TIMEOUT_ENV = "NETDIFFUSION_KFP_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0


class KFPTimeout(TimeoutError):
    """The KFP API accepted (or refused to accept) the connection but did not answer in time."""


def kfp_timeout(timeout_s: float | None = None) -> float:
    """The KFP call timeout in seconds: ``timeout_s``, else $NETDIFFUSION_KFP_TIMEOUT_S, else 30."""
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV, "").strip()
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise SystemExit(f"{TIMEOUT_ENV}={raw!r}: not a number of seconds") from None
    if not timeout_s > 0:
        raise SystemExit(f"KFP timeout must be > 0 seconds, got {timeout_s:g}")
    return float(timeout_s)


def check_count(count: int | None) -> None:
    """Flows per class: at least 1 (``None`` = the pipeline's default)."""
    if count is not None and int(count) < 1:
        raise SystemExit(f"--count must be >= 1 (flows per class), got {count}")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``name=value`` strings -> dict, values parsed as JSON when they are JSON."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param {item!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def split_classes(text: str | None) -> list[str]:
    from netdiffusion.commands import class_names

    return class_names(text) or []


def pipeline_arguments(pipeline: str, *, classes: list[str], count: int | None = None, model: str | None = None,
                       input_uri: str | None = None, output_uri: str | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run parameters for ``pipeline``; only what was given (the compiled defaults cover the rest)."""
    check_count(count)
    args: dict[str, Any] = {}
    if classes:
        args["classes"] = list(classes)
    if count is not None:
        args["count"] = int(count)
    if pipeline == "generate":
        args["model_uri"] = model or DEFAULT_MODEL
        if output_uri:
            args["output_uri"] = output_uri
    else:
        if input_uri:
            args["input_uri"] = input_uri
    args.update(extra or {})
    known = pipeline_parameters(pipeline)
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise SystemExit(f"pipeline {pipeline!r} has no parameter(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(known))}")
    return args


def package_path(pipeline: str) -> Path:
    """The compiled pipeline file (compiled into a temp dir if the committed one is missing)."""
    path = COMPILED / f"{pipeline}.yaml"
    if path.exists():
        return path
    from pipelines.compile import compile_all

    tmp = Path(tempfile.mkdtemp(prefix="netdiffusion-pipelines-"))
    compile_all(tmp)
    return tmp / f"{pipeline}.yaml"


def pipeline_parameters(pipeline: str) -> dict[str, Any]:
    """Input parameters of a compiled pipeline: name -> spec (type, default)."""
    import yaml

    spec = next(yaml.safe_load_all(package_path(pipeline).read_text()))  # doc 1: pipeline, 2: platform
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def client(host: str, namespace: str | None = None, timeout_s: float | None = None):
    """A ``kfp.Client`` for ``host`` whose every API call is bounded by ``timeout_s`` (see
    :func:`kfp_timeout`); imported lazily: kfp takes a second to import.

    ``kfp.Client`` has no timeout setting: its generated ``kfp_server_api`` REST client takes a
    per-call ``_request_timeout`` (a (connect, read) pair for urllib3) and otherwise waits forever.
    The subclass installs that timeout as the default for every call, before the constructor's own
    health check, and stops urllib3 from retrying a read that timed out."""
    import warnings

    import kfp
    import urllib3

    timeout = kfp_timeout(timeout_s)
    pair = (min(timeout, 10.0), timeout)

    class BoundedClient(kfp.Client):
        def _load_config(self, *args: Any, **kwargs: Any) -> Any:
            config = super()._load_config(*args, **kwargs)
            config.retries = urllib3.Retry(total=2, connect=2, read=0, redirect=5, status=0)
            return config

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            _bound(self._healthz_api.api_client, pair)
            return super().get_kfp_healthz(sleep_duration=min(sleep_duration, 1))

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    with bounded(host, timeout):
        kfp_client = BoundedClient(host=host, namespace=namespace) if namespace else BoundedClient(host=host)
    _bound(kfp_client._run_api.api_client, pair)
    kfp_client.timeout_s = timeout
    return kfp_client


def _bound(api_client: Any, pair: tuple[float, float]) -> None:
    """Make ``pair`` the default ``_request_timeout`` of every call through ``api_client``."""
    rest = api_client.rest_client
    if getattr(rest, "netdiffusion_timeout", None) == pair:
        return
    request = type(rest).request.__get__(rest)

    def bounded(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return request(*args, _request_timeout=_request_timeout or pair, **kwargs)

    rest.request = bounded
    rest.netdiffusion_timeout = pair


def _timeout_error(exc: BaseException, host: str, timeout_s: float) -> KFPTimeout | None:
    """A one-line ``KFPTimeout`` if ``exc`` is (caused by) a urllib3 timeout, else None."""
    import urllib3.exceptions

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, urllib3.exceptions.TimeoutError) or isinstance(
                getattr(seen, "reason", None), urllib3.exceptions.TimeoutError):
            return KFPTimeout(f"Kubeflow Pipelines at {host} did not answer within {timeout_s:g} s "
                              f"(--kfp-timeout / {TIMEOUT_ENV})")
        seen = seen.__cause__ or seen.__context__
    return None


def call(host: str, kfp_client: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """``kfp_client.<method>(...)`` with a urllib3 timeout turned into one clear ``KFPTimeout``."""
    with bounded(host, kfp_client.timeout_s):
        return getattr(kfp_client, method)(*args, **kwargs)


@contextmanager
def bounded(host: str, timeout_s: float) -> Iterator[None]:
    """Turn a urllib3 timeout raised inside the block into one clear ``KFPTimeout``."""
    try:
        yield
    except Exception as exc:
        error = _timeout_error(exc, host, timeout_s)
        if error is None:
            raise
        raise error from exc


def submit(pipeline: str, host: str, arguments: dict[str, Any], *, experiment: str = "netdiffusion",
           run_name: str | None = None, namespace: str | None = None, wait: bool = False,
           timeout_s: float | None = None) -> dict[str, Any]:
    """Create a run of the compiled ``pipeline`` on ``host``; returns ``{"run_id", "url", ...}``."""
    kfp_client = client(host, namespace, timeout_s)
    result = call(host, kfp_client, "create_run_from_pipeline_package",
                  str(package_path(pipeline)), arguments=arguments, run_name=run_name or f"netdiffusion-{pipeline}",
                  experiment_name=experiment, namespace=namespace)
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    out: dict[str, Any] = {"ok": True, "run_id": result.run_id, "url": url, "pipeline": pipeline,
                           "arguments": arguments, "message": f"submitted {pipeline} run {result.run_id}: {url}"}
    if wait:
        with bounded(host, kfp_client.timeout_s):
            final = result.wait_for_run_completion()
        state = str(getattr(final, "state", "") or "")
        out.update(ok=state.upper() == "SUCCEEDED", state=state,
                   message=out["message"] + f" -> {state or 'finished'}")
    return out


def schedule(pipeline: str, host: str, arguments: dict[str, Any], *, cron: str, experiment: str = "netdiffusion",
             job_name: str | None = None, namespace: str | None = None, max_concurrency: int = 1,
             timeout_s: float | None = None) -> dict[str, Any]:
    """Create a recurring run (KFP cron: 6 fields, seconds first); returns its id."""
    fields = cron.split()
    if len(fields) != 6:
        raise SystemExit(f"--cron {cron!r}: KFP cron has 6 fields (seconds minutes hours day month weekday)")
    kfp_client = client(host, namespace, timeout_s)
    exp = call(host, kfp_client, "create_experiment", name=experiment, namespace=namespace)
    job = call(
        host, kfp_client, "create_recurring_run",
        experiment_id=exp.experiment_id, job_name=job_name or f"netdiffusion-{pipeline}-scheduled",
        cron_expression=cron, max_concurrency=max_concurrency, params=arguments,
        pipeline_package_path=str(package_path(pipeline)), no_catchup=True)
    return {"ok": True, "recurring_run_id": job.recurring_run_id, "cron": cron, "pipeline": pipeline,
            "message": f"scheduled {pipeline} ({cron}): recurring run {job.recurring_run_id}"}


def namespace_from_args(args: argparse.Namespace) -> str | None:
    """``--namespace``, else $KFP_NAMESPACE (the Helm chart's ConfigMap sets it), else none."""
    return getattr(args, "namespace", None) or os.environ.get("KFP_NAMESPACE") or None


def submit_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``netdiffusion submit``: to KFP with ``--host``, else the same pipeline locally."""
    check_count(args.count)
    classes = split_classes(args.classes)
    extra = parse_params(args.param)
    if args.host:
        arguments = pipeline_arguments(args.pipeline, classes=classes, count=args.count, model=args.model,
                                       input_uri=args.input, output_uri=args.output_uri, extra=extra)
        return submit(args.pipeline, args.host, arguments, experiment=args.experiment, run_name=args.run_name,
                      namespace=namespace_from_args(args), wait=args.wait,
                      timeout_s=getattr(args, "kfp_timeout", None))
    from pipelines.local import format_summary, run_generate, run_refresh

    # the same parameter names as on a cluster: unknown ones are refused, not silently dropped
    pipeline_arguments(args.pipeline, classes=classes, count=args.count, model=args.model, input_uri=args.input,
                       output_uri=args.output_uri, extra=extra)
    local_params = LOCAL_PARAMETERS[args.pipeline]
    ignored = sorted(set(extra) - set(local_params))
    if ignored:
        log.warning("--param %s: ignored by a local run (used on a cluster)", ", ".join(ignored))
    chosen = {k: v for k, v in extra.items() if k in local_params}
    log.info("no --host (KFP_HOST): running the %s pipeline locally under %s", args.pipeline, args.out)
    if args.pipeline == "refresh":
        summary = run_refresh(args.out, input_uri=args.input, classes=classes or None, count=args.count, **chosen)
    else:
        model = args.model or _local_model(Path(args.out))
        summary = run_generate(args.out, model=model, classes=classes, count=10 if args.count is None else args.count,
                               output_uri=args.output_uri or "", **chosen)
    return {"ok": True, "summary": summary, "message": format_summary(summary)}


# pipeline parameters a local run (pipelines.local) honours; the others only matter on a cluster
LOCAL_PARAMETERS = {"refresh": ("packets", "config", "seed", "tcpreplay"), "generate": ("seed", "tracking_uri")}


def schedule_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``netdiffusion schedule``: a recurring run needs a KFP host."""
    check_count(args.count)
    if not args.host:
        return {"ok": False, "message": "schedule: a recurring run needs a Kubeflow Pipelines host "
                                        "(KFP_HOST=... / --host); locally, use cron with `make run`"}
    arguments = pipeline_arguments(args.pipeline, classes=split_classes(args.classes), count=args.count,
                                   model=args.model, input_uri=args.input, output_uri=args.output_uri,
                                   extra=parse_params(args.param))
    return schedule(args.pipeline, args.host, arguments, cron=args.cron, experiment=args.experiment,
                    job_name=args.job_name, namespace=namespace_from_args(args),
                    max_concurrency=args.max_concurrency, timeout_s=getattr(args, "kfp_timeout", None))


def _local_model(out: Path) -> str:
    """Without ``--model``: the model of the last local refresh, else the registry's champion."""
    if (out / "model" / "model.json").exists():
        return str((out / "model").resolve())
    return DEFAULT_MODEL
