"""Bounded loopback load test of ``netdiffusion serve``: requests/s and latency percentiles for job
submission and status reads, plus the end-to-end time of one small job.

A tiny native model is trained first (seconds); the server runs with one job worker, so jobs keep
executing in the background while the API is under load, as in production. Loopback only, and the
load stops after a fixed number of requests. Run: ``python -m bench.run_all serve``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SUBMITS = 200
STATUS_PER_SUBMIT = 4
CONCURRENCY = 8
TOKENS = ["bench-token-a-0123456789", "bench-token-b-0123456789"]


def main() -> dict[str, Any]:
    import httpx

    from netdiffusion.model.testing import write_synthetic_dataset
    from netdiffusion.model.train import train
    from netdiffusion.serve.loadtest import load_test, run_server

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        data = write_synthetic_dataset(root / "data")
        model = root / "model"
        train(data, model, backend="native", config="tiny", seed=0)
        classes = json.loads((model / "model.json").read_text())["classes"]
        env = {"NETDIFFUSION_SERVE_WORKERS": "1", "NETDIFFUSION_SERVE_JOB_THREADS": "1",
               "NETDIFFUSION_SERVE_QUOTA_JOBS": "100000", "NETDIFFUSION_SERVE_QUOTA_FLOWS": "10000000"}
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        with run_server(root / "state", model, TOKENS, env=env) as server:
            # one small job end to end (queue → generate → package), before the load starts
            body = {"classes": classes[:2], "count": 2, "packets": 8, "format": "parquet"}
            t0 = time.perf_counter()
            job_id = httpx.post(f"{server.url}/v1/jobs", json=body, headers=headers).json()["id"]
            while (job := httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=headers).json())["status"] not in (
                    "succeeded", "failed"):
                time.sleep(0.1)
            job_seconds = time.perf_counter() - t0
            # warm-up, then the measured load
            load_test(server.url, TOKENS[1], {**body, "count": 1}, submits=10, concurrency=2)
            result = load_test(server.url, TOKENS[1], {**body, "count": 1}, submits=SUBMITS,
                               status_per_submit=STATUS_PER_SUBMIT, concurrency=CONCURRENCY)
    summary = result.summary()
    return {
        "setup": {"submits": SUBMITS, "status_per_submit": STATUS_PER_SUBMIT, "concurrency": CONCURRENCY,
                  "job_workers": 1, "cpus": os.cpu_count(), "transport": "loopback HTTP/1.1 (httpx)"},
        "load": summary,
        "small_job": {"status": job["status"], "seconds_end_to_end": round(job_seconds, 2),
                      "flows": 4, "packets_per_flow": 8, "format": "parquet", "error": job["error"]},
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
