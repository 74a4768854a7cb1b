"""Submit compiled pipelines to a Kubeflow Pipelines API (``make submit`` / ``make schedule``).

With a host, the compiled IR (``pipelines/compiled/<name>.yaml``, compiled on the fly if missing) is
sent with ``kfp.Client(host=...).create_run_from_pipeline_package`` or ``create_recurring_run``.
Without one, ``make submit`` runs the same pipeline locally through ``pipelines.local``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("netdiffusion.pipelines")

COMPILED = Path(__file__).resolve().parent / "compiled"
DEFAULT_MODEL = "models:/netdiffusion@champion"


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
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def pipeline_arguments(pipeline: str, *, classes: list[str], count: int | None = None, model: str | None = None,
                       input_uri: str | None = None, output_uri: str | None = None,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run parameters for ``pipeline``; only what was given (the compiled defaults cover the rest)."""
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


def client(host: str, namespace: str | None = None):
    """A ``kfp.Client`` for ``host`` (imported lazily: kfp takes a second to import)."""
    import warnings

    import kfp

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    return kfp.Client(host=host, namespace=namespace) if namespace else kfp.Client(host=host)


def submit(pipeline: str, host: str, arguments: dict[str, Any], *, experiment: str = "netdiffusion",
           run_name: str | None = None, namespace: str | None = None, wait: bool = False) -> dict[str, Any]:
    """Create a run of the compiled ``pipeline`` on ``host``; returns ``{"run_id", "url", ...}``."""
    kfp_client = client(host, namespace)
    result = kfp_client.create_run_from_pipeline_package(
        str(package_path(pipeline)), arguments=arguments, run_name=run_name or f"netdiffusion-{pipeline}",
        experiment_name=experiment, namespace=namespace)
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    out: dict[str, Any] = {"ok": True, "run_id": result.run_id, "url": url, "pipeline": pipeline,
                           "arguments": arguments, "message": f"submitted {pipeline} run {result.run_id}: {url}"}
    if wait:
        final = result.wait_for_run_completion()
        state = str(getattr(final, "state", "") or "")
        out.update(ok=state.upper() == "SUCCEEDED", state=state,
                   message=out["message"] + f" -> {state or 'finished'}")
    return out


def schedule(pipeline: str, host: str, arguments: dict[str, Any], *, cron: str, experiment: str = "netdiffusion",
             job_name: str | None = None, namespace: str | None = None, max_concurrency: int = 1) -> dict[str, Any]:
    """Create a recurring run (KFP cron: 6 fields, seconds first); returns its id."""
    fields = cron.split()
    if len(fields) != 6:
        raise SystemExit(f"--cron {cron!r}: KFP cron has 6 fields (seconds minutes hours day month weekday)")
    kfp_client = client(host, namespace)
    exp = kfp_client.create_experiment(name=experiment, namespace=namespace)
    job = kfp_client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=job_name or f"netdiffusion-{pipeline}-scheduled",
        cron_expression=cron, max_concurrency=max_concurrency, params=arguments,
        pipeline_package_path=str(package_path(pipeline)), no_catchup=True)
    return {"ok": True, "recurring_run_id": job.recurring_run_id, "cron": cron, "pipeline": pipeline,
            "message": f"scheduled {pipeline} ({cron}): recurring run {job.recurring_run_id}"}


def submit_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``netdiffusion submit``: to KFP with ``--host``, else the same pipeline locally."""
    classes = split_classes(args.classes)
    extra = parse_params(args.param)
    if args.host:
        arguments = pipeline_arguments(args.pipeline, classes=classes, count=args.count, model=args.model,
                                       input_uri=args.input, output_uri=args.output_uri, extra=extra)
        return submit(args.pipeline, args.host, arguments, experiment=args.experiment, run_name=args.run_name,
                      namespace=args.namespace, wait=args.wait)
    from pipelines.local import format_summary, run_generate, run_refresh

    log.info("no --host (KFP_HOST): running the %s pipeline locally under %s", args.pipeline, args.out)
    if args.pipeline == "refresh":
        summary = run_refresh(args.out, input_uri=args.input, classes=classes or None, count=args.count,
                              **{k: v for k, v in extra.items() if k in ("packets", "config", "seed")})
    else:
        model = args.model or _local_model(Path(args.out))
        summary = run_generate(args.out, model=model, classes=classes, count=args.count or 10,
                               output_uri=args.output_uri or "")
    return {"ok": True, "summary": summary, "message": format_summary(summary)}


def schedule_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``netdiffusion schedule``: a recurring run needs a KFP host."""
    if not args.host:
        return {"ok": False, "message": "schedule: a recurring run needs a Kubeflow Pipelines host "
                                        "(KFP_HOST=... / --host); locally, use cron with `make run`"}
    arguments = pipeline_arguments(args.pipeline, classes=split_classes(args.classes), count=args.count,
                                   model=args.model, input_uri=args.input, output_uri=args.output_uri,
                                   extra=parse_params(args.param))
    return schedule(args.pipeline, args.host, arguments, cron=args.cron, experiment=args.experiment,
                    job_name=args.job_name, namespace=args.namespace, max_concurrency=args.max_concurrency)


def _local_model(out: Path) -> str:
    """Without ``--model``: the model of the last local refresh, else the registry's champion."""
    if (out / "model" / "model.json").exists():
        return str((out / "model").resolve())
    return DEFAULT_MODEL
