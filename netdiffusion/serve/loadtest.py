"""Run a local service as a subprocess and put a bounded load on it (tests and bench/bench_serve.py).

Loopback only: the server listens on 127.0.0.1 and the load stops after a fixed number of
requests, so it can never turn into an open-ended flood.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def run_server(state_dir: Path, model: str | Path, tokens: list[str], *, env: dict[str, str] | None = None,
               port: int | None = None, startup_timeout_s: float = 60.0) -> Iterator[Server]:
    """``netdiffusion serve`` on 127.0.0.1 with the given state dir; stopped (SIGTERM) on exit."""
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"server-{port}.log"
    full_env = {**os.environ, "NETDIFFUSION_API_TOKENS": ",".join(tokens), **(env or {})}
    cmd = [sys.executable, "-m", "netdiffusion", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--state-dir", str(state_dir), "--model", str(model)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env)
    server = Server(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        _wait_healthy(server, startup_timeout_s)
        yield server
    finally:
        stop_server(server)


def stop_server(server: Server, timeout_s: float = 20.0) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def _wait_healthy(server: Server, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}: {server.log()[-2000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not healthy after {timeout_s:g} s: {server.log()[-2000:]}")


@dataclass
class LoadResult:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": round(self.seconds, 3), "errors": len(self.errors),
                               "error_examples": self.errors[:5]}
        total = 0
        for name, values in self.latencies.items():
            arr = np.asarray(values) * 1000.0
            total += len(arr)
            out[name] = {"requests": len(arr), "p50_ms": round(float(np.percentile(arr, 50)), 2),
                         "p95_ms": round(float(np.percentile(arr, 95)), 2),
                         "max_ms": round(float(arr.max()), 2),
                         "statuses": {str(k): v for k, v in sorted(self.statuses[name].items())}}
        out["requests"] = total
        out["requests_per_s"] = round(total / max(self.seconds, 1e-9), 1)
        return out


def load_test(url: str, token: str, job_body: dict[str, Any], *, submits: int, status_per_submit: int = 3,
              concurrency: int = 4, timeout_s: float = 30.0) -> LoadResult:
    """Each of ``concurrency`` clients submits jobs and polls their status, ``submits`` jobs in all.

    Returns per-endpoint latencies; any non-2xx answer or transport error is an error."""
    import httpx

    result = LoadResult(latencies={"submit": [], "status": []}, statuses={"submit": {}, "status": {}})
    lock = threading.Lock()
    counter = iter(range(submits))
    headers = {"Authorization": f"Bearer {token}"}

    def record(kind: str, seconds: float, status: int | None, error: str | None) -> None:
        with lock:
            result.latencies[kind].append(seconds)
            if status is not None:
                result.statuses[kind][status] = result.statuses[kind].get(status, 0) + 1
            if error:
                result.errors.append(error)

    def client_loop() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/jobs", json={**job_body, "seed": i})
                    ok = r.status_code == 202
                    record("submit", time.perf_counter() - t0, r.status_code,
                           None if ok else f"submit {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    record("submit", time.perf_counter() - t0, None, f"submit: {exc!r}")
                    continue
                if not ok:
                    continue
                job_id = r.json()["id"]
                for _ in range(status_per_submit):
                    t0 = time.perf_counter()
                    try:
                        s = client.get(f"/v1/jobs/{job_id}")
                        record("status", time.perf_counter() - t0, s.status_code,
                               None if s.status_code == 200 else f"status {s.status_code}: {s.text[:200]}")
                    except httpx.HTTPError as exc:
                        record("status", time.perf_counter() - t0, None, f"status: {exc!r}")

    threads = [threading.Thread(target=client_loop, name=f"load-{i}") for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - started
    return result
