"""Runs one job in its own process: generate → (truncate) → repair → validate/export → archive.

The worker pool starts ``python -m netdiffusion.serve.runner --state-dir D JOB`` per job, so a
crash, a leak or a kill only affects that job, and torch's threads stay bounded per job. The
process reports progress and the outcome in the job store itself; the pool marks the job failed
(with the process's last words) if it dies without doing so.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any

from netdiffusion.serve.store import FAILED, HEARTBEAT_S, RUNNING, SUCCEEDED, JobStore

log = logging.getLogger("netdiffusion.serve.runner")

FORMATS = ("pcap", "parquet", "nprint")


def job_paths(state_dir: Path, job_id: str) -> dict[str, Path]:
    base = state_dir / "jobs" / job_id
    return {"work": base / "work", "output": base / "output", "archive": state_dir / "results" / f"{job_id}.zip"}


def remove_job_files(state_dir: Path, job_id: str) -> None:
    """Delete what a job stored under the state dir (work, output, log, archive); S3 copies stay
    (an S3 lifecycle rule on the results prefix expires those)."""
    paths = job_paths(state_dir, job_id)
    shutil.rmtree(paths["work"].parent, ignore_errors=True)
    for archive in (paths["archive"], paths["archive"].with_suffix(".zip.tmp")):
        archive.unlink(missing_ok=True)


def expire_results(store: JobStore, state_dir: Path, retention_s: float, now: float | None = None) -> int:
    """Remove the stored results of jobs that ended more than ``retention_s`` ago (0: keep all) and
    record when (``expired``); returns how many. Why: an organization-wide service otherwise fills
    its state volume with every archive it ever made."""
    if retention_s <= 0:
        return 0
    now = time.time() if now is None else now
    removed = 0
    while ids := store.ended_before(now - retention_s):
        for job_id in ids:
            remove_job_files(state_dir, job_id)
            store.update(job_id, expired=now)
            removed += 1
    return removed


def truncate_packets(dataset: Path, output: Path, packets: int) -> None:
    """Keep the first ``packets`` packets of every flow (the model's flow length is fixed)."""
    from netdiffusion.dataset import FIELDS_FILE, iter_shards, write_shard

    output.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(iter_shards(dataset)):
        write_shard(shard.take(shard.packet_index < packets), output / f"part-{i:05d}.parquet")
    for name in (FIELDS_FILE, "summary.json"):
        if (dataset / name).exists():
            shutil.copy2(dataset / name, output / name)
    if (dataset / "images").exists():
        shutil.copytree(dataset / "images", output / "images", dirs_exist_ok=True)


def run_job(state_dir: Path, job_id: str, s3_uri: str | None = None) -> dict[str, Any]:
    """Do the work of one claimed job and return its result description."""
    store = JobStore(state_dir / "jobs.db")
    job = store.get(job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found")
    req = job["request"]
    if req.get("target", "local") != "local":  # large jobs run as KFP runs; locally they would bypass limits
        raise RuntimeError(f"job {job_id} is a {req.get('target')} job: it runs as a Kubeflow Pipelines run, "
                           "not in a local job process")
    paths = job_paths(state_dir, job_id)
    work, output = paths["work"], paths["output"]
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    work.mkdir(parents=True)
    output.mkdir(parents=True)

    def stage(name: str, progress: float) -> None:
        store.update(job_id, stage=name, progress=progress)
        log.info("job %s: %s", job_id, name)

    stage("resolving model", 0.02)
    from netdiffusion.serve.models import ModelSource

    source = ModelSource(req["model_ref"], cache_dir=state_dir / "models")  # keeps what the service's env says
    with source.use(req["model_ref"]) as model_dir:  # kept on disk until generation is done
        stage("generating", 0.05)
        from netdiffusion.model.generate import generate

        generated = work / "generated"
        generate(model_dir, generated, classes=req["classes"], count=req["count"], seed=req.get("seed", 0),
                 images=False)
    model_packets = req.get("model_packets")
    dataset = generated
    if req.get("packets") and (model_packets is None or req["packets"] < model_packets):
        stage("truncating flows", 0.55)
        dataset = work / "truncated"
        truncate_packets(generated, dataset, req["packets"])

    stage("repairing", 0.6)
    fmt = req["format"]
    result: dict[str, Any] = {"format": fmt}
    try:
        from netdiffusion.repair import repair_dataset
    except ImportError:
        if fmt != "parquet":
            raise RuntimeError("the repair stage (netdiffusion.repair) is not installed; only format=parquet "
                               "(unrepaired) is available") from None
        repair_dataset = None
    pcaps = output / "pcaps" if fmt == "pcap" else work / "pcaps"
    repaired = work / "repaired" if fmt != "parquet" else output / "dataset"
    if repair_dataset is not None:
        result["repair"] = _small(repair_dataset(dataset, pcaps, dataset_output=repaired, seed=req.get("seed", 0),
                                                 progress=False))
        result["repaired"] = True
    else:  # parquet straight from the model: valid dataset, bits not yet protocol-repaired
        shutil.copytree(dataset, repaired)
        result["repaired"] = False

    if fmt == "pcap":
        stage("validating", 0.8)
        from netdiffusion.validate import validate_dir

        report = validate_dir(pcaps, output / "validation.json", tcpreplay=False, progress=False)
        failed = list(report.get("failed") or [])
        result["validation"] = {"valid": not failed, "failed": len(failed), "failed_files": failed[:10],
                                "totals": _small(report.get("totals"))}
    elif fmt == "nprint":
        stage("exporting nPrint CSV", 0.8)
        from netdiffusion import nprint_csv

        result["export"] = _small(nprint_csv.export_dataset(repaired, output / "nprint"))

    stage("packaging", 0.92)
    files = sorted(p for p in output.rglob("*") if p.is_file())
    archive = paths["archive"]
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(output).as_posix())
    os.replace(tmp, archive)
    result.update({"files": len(files), "bytes": archive.stat().st_size, "archive": archive.name})
    if s3_uri:
        stage("uploading", 0.96)
        result["uris"] = upload(output, archive, f"{s3_uri.rstrip('/')}/{job_id}")
    shutil.rmtree(work, ignore_errors=True)
    return result


def upload(output: Path, archive: Path, prefix: str) -> dict[str, str]:
    """Copy the result to S3 with the tracking package's storage helpers (same endpoint and
    credential settings as the rest of the platform: NETDIFFUSION_S3_ENDPOINT, AWS_*)."""
    from netdiffusion.tracking.storage import upload_dir, upload_file

    upload_file(archive, f"{prefix}/{archive.name}")
    upload_dir(output, f"{prefix}/files")
    return {"archive": f"{prefix}/{archive.name}", "prefix": f"{prefix}/files/"}


def public_result(obj: Any, state_dir: Path, job_id: str) -> Any:
    """``obj`` without server file paths: paths inside the job's output become relative to it (the
    layout of the downloaded archive), other paths under the state dir are left out."""
    root = str(Path(state_dir).resolve())
    output = str(job_paths(Path(state_dir).resolve(), job_id)["output"])

    def server_path(value: Any) -> bool:
        return isinstance(value, str) and (value.startswith(root) or value.startswith(str(state_dir)))

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not server_path(v) or _inside(v, output)}
        if isinstance(value, list):
            return [clean(v) for v in value if not server_path(v) or _inside(v, output)]
        if isinstance(value, str) and _inside(value, output):
            return Path(value).resolve().relative_to(output).as_posix() or "."
        return value

    return clean(obj)


def _inside(value: Any, folder: str) -> bool:
    if not isinstance(value, str) or not value.startswith("/"):
        return False
    try:
        Path(value).resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def _small(obj: Any, depth: int = 0) -> Any:
    """A JSON-safe summary of a stage's return value (no huge per-file lists in the job row)."""
    if isinstance(obj, dict):
        return {str(k): _small(v, depth + 1) for k, v in list(obj.items())[:50]} if depth < 3 else "…"
    if isinstance(obj, list | tuple):
        return [_small(v, depth + 1) for v in obj[:20]] if depth < 3 else "…"
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def _watch(store: JobStore, job_id: str) -> threading.Event:
    """Beat the job's heartbeat (so other replicas know it is alive) and, if the service process
    dies (kill -9, OOM), stop too and say so instead of running orphaned. Stop as well once the
    job is no longer running: cancelled by its owner (on any replica) or failed by another replica.
    Returns an event the job sets before it records its own outcome (the watch ends there)."""
    parent = os.getppid()
    ending = threading.Event()

    def watch() -> None:
        last_beat = 0.0
        while not ending.wait(1.0):
            if os.getppid() != parent:
                store.finish(job_id, FAILED, error="interrupted: the service process died while the job was running")
                os._exit(3)
            try:
                status = store.status(job_id)
                if status != RUNNING:
                    log.warning("job %s: stopping, it is %s", job_id, status)
                    os._exit(4)
                if time.monotonic() - last_beat >= HEARTBEAT_S:
                    store.beat(job_id)
                    last_beat = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - a busy database must not kill the job
                log.warning("job %s: heartbeat failed: %s", job_id, exc)

    threading.Thread(target=watch, name="job-watch", daemon=True).start()
    return ending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="netdiffusion.serve.runner", description=__doc__)
    parser.add_argument("job_id")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--s3-uri", default=None)
    args = parser.parse_args(argv)
    from netdiffusion.serve.logs import configure_json_logging

    configure_json_logging()
    store = JobStore(args.state_dir / "jobs.db")
    ending = _watch(store, args.job_id)
    started = time.time()
    try:
        result = run_job(args.state_dir, args.job_id, args.s3_uri)
    except Exception as exc:  # noqa: BLE001 - every failure must end up in the job row
        reason = f"{type(exc).__name__}: {exc}"
        log.error("job %s failed: %s\n%s", args.job_id, reason, traceback.format_exc())
        ending.set()
        store.finish(args.job_id, FAILED, error=reason[:2000])
        return 1
    result["seconds"] = round(time.time() - started, 3)
    ending.set()
    if not store.finish(args.job_id, SUCCEEDED, result=public_result(result, args.state_dir, args.job_id)):
        remove_job_files(args.state_dir, args.job_id)  # cancelled just before the end: nothing to keep
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
