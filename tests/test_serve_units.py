"""Service building blocks without a server: token handling, settings, the job store's quota and
restart semantics (real SQLite, real threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netdiffusion.serve.auth import TokenStore, token_digest
from netdiffusion.serve.config import ServeConfig, load_tokens
from netdiffusion.serve.store import FAILED, QUEUED, RESTART_REASON, RUNNING, SUCCEEDED, JobStore


def test_tokens_are_kept_only_as_digests() -> None:
    store = TokenStore(["team-a-secret", "team-b-secret", "team-a-secret", ""])
    assert len(store) == 2
    held = repr(vars(store))
    assert "team-a-secret" not in held and token_digest("team-a-secret").hex()[:12] in store.identify("team-a-secret")
    assert store.identify("team-a-secret") != store.identify("team-b-secret")
    assert store.identify("team-a-secre") is None and store.identify("") is None


def test_tokens_from_env_and_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# mounted from a Secret\nfile-one\nfile-two, file-three  # trailing comment\n\n")
    tokens = load_tokens({"NETDIFFUSION_API_TOKENS": " env-one ,env-two,", "NETDIFFUSION_API_TOKENS_FILE": str(path)})
    assert tokens == ["env-one", "env-two", "file-one", "file-two", "file-three"]
    with pytest.raises(ValueError, match="NETDIFFUSION_API_TOKENS_FILE"):
        load_tokens({"NETDIFFUSION_API_TOKENS_FILE": str(tmp_path / "missing")})


def test_settings_precedence() -> None:
    env = {"NETDIFFUSION_SERVE_WORKERS": "5", "NETDIFFUSION_SERVE_QUOTA_WINDOW_S": "60",
           "NETDIFFUSION_SERVE_MODEL": "models:/x@champion", "KFP_HOST": "http://kfp:8888"}
    config = ServeConfig.from_env(env, workers=3)
    assert config.workers == 3 and config.quota_window_s == 60.0 and config.model == "models:/x@champion"
    assert config.kfp_host == "http://kfp:8888" and "tokens" not in repr(config)
    with pytest.raises(ValueError, match="NETDIFFUSION_SERVE_MAX_COUNT"):
        ServeConfig.from_env({"NETDIFFUSION_SERVE_MAX_COUNT": "lots"})


def test_serve_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETDIFFUSION_API_TOKENS")}
    proc = subprocess.run([sys.executable, "-m", "netdiffusion", "serve", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "no API tokens" in proc.stdout


def test_quota_holds_under_concurrent_requests(tmp_path: Path) -> None:
    """Check-and-insert is one transaction: 8 threads x 10 attempts never exceed the limit."""
    store_path = tmp_path / "jobs.db"
    JobStore(store_path)
    accepted: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        store = JobStore(store_path)  # own connection per thread, like the API's worker threads
        for _ in range(10):
            job_id, _reason = store.create_within_quota("tok", {"n": 1}, 3, window_s=3600, max_jobs=25,
                                                        max_flows=1000)
            if job_id:
                with lock:
                    accepted.append(job_id)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 25
    job_id, reason = JobStore(store_path).create_within_quota("other", {}, 1001, window_s=3600, max_jobs=25,
                                                              max_flows=1000)
    assert job_id is None and "flow quota" in reason


def test_recover_after_restart(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db")
    done = store.create("t", {"a": 1}, 1)
    running = store.create("t", {"a": 2}, 1)
    queued = store.create("t", {"a": 3}, 1)
    elsewhere = store.create("t", {"a": 4}, 1)
    assert store.claim(done, "pod-a") and store.claim(running, "pod-a") and store.claim(elsewhere, "pod-b")
    assert not store.claim(done, "pod-b")  # already running: nobody can claim it twice
    store.finish(done, SUCCEEDED, result={"files": 2})
    reopened = JobStore(tmp_path / "jobs.db")
    failed, requeue = reopened.recover("pod-a")
    assert (failed, requeue) == (1, [queued])
    assert reopened.get(running)["status"] == FAILED and reopened.get(running)["error"] == RESTART_REASON
    assert reopened.get(done)["status"] == SUCCEEDED and reopened.get(done)["result"] == {"files": 2}
    assert reopened.get(queued)["status"] == QUEUED
    # pod-b's job still beats: left alone until its heartbeat goes stale
    assert reopened.get(elsewhere)["status"] == RUNNING and reopened.fail_stale(stale_s=60) == 0
    time.sleep(0.05)
    assert reopened.fail_stale(stale_s=0.01) == 1
    lost = reopened.get(elsewhere)
    assert lost["status"] == FAILED and lost["error"].startswith("lost: no heartbeat")
    assert reopened.counts()[RUNNING] == 0
    assert json.loads(json.dumps(reopened.list("t")))[0]["request"] == {"a": 4}


def test_old_database_is_migrated(tmp_path: Path) -> None:
    """A jobs.db from before the owner/heartbeat columns opens and keeps its jobs."""
    import sqlite3

    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, token_id TEXT NOT NULL, status TEXT NOT NULL, "
                   "request TEXT NOT NULL, flows INTEGER NOT NULL, progress REAL NOT NULL DEFAULT 0, "
                   "stage TEXT NOT NULL DEFAULT '', error TEXT, result TEXT, created REAL NOT NULL, "
                   "started REAL, finished REAL)")
        db.execute("INSERT INTO jobs (id, token_id, status, request, flows, created) "
                   "VALUES ('old', 't', 'running', '{}', 1, 0)")
    store = JobStore(path)
    assert store.recover("host") == (1, [])
    assert store.get("old")["status"] == FAILED


def test_stop_marks_running_jobs_failed_before_returning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (pool.stop) must leave no job ``running``: the worker threads are daemons, so stop() has to
    wait for them to record "stopped: ..." before the service process exits (docs/serve.md)."""
    from netdiffusion.serve import worker
    from netdiffusion.serve.metrics import ServiceMetrics

    store = JobStore(tmp_path / "jobs.db")
    real_popen = subprocess.Popen
    # a job process that just sleeps (no torch import); the real command line is not needed here
    monkeypatch.setattr(worker.subprocess, "Popen",
                        lambda cmd, **kw: real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw))
    real_get = JobStore.get

    def slow_get(self: JobStore, job_id: str):  # a busy machine: the worker thread records a moment late
        if threading.current_thread().name.startswith("job-worker"):
            time.sleep(0.5)
        return real_get(self, job_id)

    pool = worker.WorkerPool(store, tmp_path, workers=2, job_threads=1, timeout_s=600, s3_uri=None,
                             metrics=ServiceMetrics(store.counts))
    pool.start()
    jobs = [store.create("t", {"classes": ["a"], "count": 1, "target": "local"}, 1) for _ in range(2)]
    for job_id in jobs:
        pool.submit(job_id)
    deadline = time.monotonic() + 30
    while len(pool._procs) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pool._procs) == 2
    monkeypatch.setattr(JobStore, "get", slow_get)
    pool.stop(grace_s=5)
    monkeypatch.setattr(JobStore, "get", real_get)
    for job_id in jobs:
        job = store.get(job_id)
        assert job["status"] == FAILED and job["error"].startswith("stopped: the service shut down"), job


def test_a_local_model_service_calls_malformed_references_invalid(tmp_path: Path) -> None:
    """QA: with a local model dir, malformed references got 404 "serves only the local model";
    docs/serve.md (and the registry mode) make them 422, and only well-formed other models 404."""
    from netdiffusion.serve.models import ModelNotFound, ModelReferenceInvalid, ModelSource

    source = ModelSource(str(tmp_path / "model"), cache_dir=tmp_path / "cache")
    assert source.reference(None) == source.reference("local") == str(tmp_path / "model")
    for bad in ("models:/x/../y", "models:/x/Production", "models:/x@", "bad/../ref", "a b"):
        with pytest.raises(ModelReferenceInvalid):
            source.reference(bad)
    for other in ("models:/x@champion", "models:/x/3", "7", "challenger"):
        with pytest.raises(ModelNotFound):
            source.reference(other)


def test_a_cancelled_job_keeps_its_status_and_old_results_expire(tmp_path: Path) -> None:
    """A job process finishing (or failing) after its owner cancelled it cannot overwrite that; a
    pipeline submission that completes after the cancel is refused (the submitter then terminates
    the run); ended jobs past the retention period lose their stored files, not their records."""
    from netdiffusion.serve.runner import expire_results, job_paths
    from netdiffusion.serve.store import CANCELLED

    store = JobStore(tmp_path / "jobs.db")
    running = store.create("tok", {}, 1)
    assert store.claim(running) and store.cancel(running) == RUNNING
    assert not store.finish(running, SUCCEEDED, result={"files": 3})
    assert not store.finish(running, FAILED, error="terminated")
    assert store.get(running)["status"] == CANCELLED and store.get(running)["result"] is None
    assert store.cancel(running) is None and not store.beat(running)
    submitting = store.create("tok", {"target": "pipeline"}, 1)
    assert store.claim(submitting) and store.cancel(submitting) == RUNNING
    assert not store.mark_submitted(submitting, {"pipeline_run_id": "run-1"})
    assert store.get(submitting)["status"] == CANCELLED

    done = store.create("tok", {}, 1)
    assert store.claim(done) and store.finish(done, SUCCEEDED, result={"files": 1})
    paths = job_paths(tmp_path, done)
    paths["output"].mkdir(parents=True)
    (paths["output"] / "a.pcap").write_bytes(b"x")
    paths["archive"].parent.mkdir(parents=True)
    paths["archive"].write_bytes(b"zip")
    queued = store.create("tok", {}, 1)
    finished = store.get(done)["finished"]
    assert expire_results(store, tmp_path, 60.0, now=finished + 59) == 0 and paths["archive"].exists()
    assert expire_results(store, tmp_path, 0, now=finished + 10**6) == 0  # 0: keep everything
    assert expire_results(store, tmp_path, 60.0, now=finished + 61) == 3  # the two cancelled ones too
    assert not paths["archive"].exists() and not paths["output"].parent.exists()
    assert store.get(done)["expired"] == finished + 61 and store.get(done)["status"] == SUCCEEDED
    assert store.get(queued)["expired"] is None and store.get(queued)["status"] == QUEUED
    assert expire_results(store, tmp_path, 60.0, now=finished + 3600) == 0  # each job once
