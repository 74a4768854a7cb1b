"""The local worker pool: N threads, each running one job process at a time.

Threads only wait on child processes, so the API stays responsive while jobs use the CPU. A job
process that dies without recording an outcome (OOM kill, segfault, timeout) is marked failed
here with its exit status and the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from netdiffusion.serve.metrics import ServiceMetrics
from netdiffusion.serve.store import CANCELLED, FAILED, TERMINAL, JobStore

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, store: JobStore, state_dir: Path, *, workers: int, job_threads: int,
                 timeout_s: float, s3_uri: str | None, metrics: ServiceMetrics) -> None:
        self.store = store
        self.state_dir = state_dir
        self.timeout_s = timeout_s
        self.s3_uri = s3_uri
        self.job_threads = job_threads
        self.metrics = metrics
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._loop, name=f"job-worker-{i}", daemon=True)
                         for i in range(max(1, workers))]
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self.owner = socket.gethostname()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def queued(self) -> int:
        return self._queue.qsize()

    def cancel(self, job_id: str) -> bool:
        """End the job's process if it runs here (the job row already says cancelled; a job on
        another replica stops by itself within a second, see ``runner._watch``)."""
        with self._lock:
            proc = self._procs.get(job_id)
        if proc is None:
            return False
        proc.terminate()
        return True

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking jobs, end running job processes and wait until their worker threads have marked
        the jobs failed ("stopped: ..."); the threads are daemons, so without that wait the process
        could exit first and leave the jobs ``running`` until the next start-up's recovery."""
        self._stopping = True
        for _ in self._threads:
            self._queue.put(None)
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        for t in self._threads:
            if t.is_alive() and t is not threading.current_thread():
                t.join(max(0.1, deadline - time.monotonic()) + 2.0)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping:
                return
            try:
                self._run(job_id)
            except Exception:  # noqa: BLE001 - a worker thread must survive any one job
                log.exception("worker failed on job %s", job_id)
                self.store.finish(job_id, FAILED, error="internal error while running the job")

    def _run(self, job_id: str) -> None:
        job = self.store.get(job_id) or {}
        if job.get("request", {}).get("target", "local") != "local":
            log.error("job %s is a pipeline job: not run locally", job_id)
            return
        if not self.store.claim(job_id, self.owner):
            return
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(self.job_threads)
        cmd = [sys.executable, "-m", "netdiffusion.serve.runner", job_id, "--state-dir", str(self.state_dir)]
        if self.s3_uri:
            cmd += ["--s3-uri", self.s3_uri]
        log_path = self.state_dir / "jobs" / job_id / "job.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.metrics.workers_busy.inc()
        try:
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
                with self._lock:
                    self._procs[job_id] = proc
                try:
                    rc = proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    rc = None
        finally:
            self.metrics.workers_busy.dec()
            with self._lock:
                self._procs.pop(job_id, None)
        job = self.store.get(job_id) or {}
        if job.get("status") == CANCELLED:  # what it made so far is of no use to anyone
            from netdiffusion.serve.runner import remove_job_files

            remove_job_files(self.state_dir, job_id)
        if job.get("status") not in TERMINAL:
            if rc is None:
                reason = f"timed out after {self.timeout_s:g} s"
            elif self._stopping:
                reason = "stopped: the service shut down while the job was running; submit it again"
            else:
                reason = f"job process exited with status {rc}: {_tail(log_path)}"
            self.store.finish(job_id, FAILED, error=reason)
            job["status"] = FAILED
        self.metrics.job_seconds.labels(job["status"]).observe(time.monotonic() - started)


def _tail(path: Path, limit: int = 500) -> str:
    try:
        text = path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return " ".join(text.split())
