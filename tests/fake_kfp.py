"""A fake Kubeflow Pipelines v2beta1 API server on 127.0.0.1, for tests that drive the real ``kfp.Client``.

It answers the few endpoints ``kfp.Client`` calls (healthz, experiments, runs, recurring runs) and
records every request, so tests check the real HTTP bodies the real client sends: the compiled
pipeline spec and the run parameters. Created runs get ids ``run-42``, ``run-43``, ...; what
``GET /runs/{id}`` answers is set per run in ``FakeKFP.runs`` (``None`` → 404), else
``FakeKFP.default_run``.

State lives on the handler class (one fake server at a time); ``serve_fake_kfp`` starts the server
and resets it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

FIRST_RUN_ID = 42


class FakeKFP(BaseHTTPRequestHandler):
    requests: list[dict] = []
    # GET /runs/{id}: fields merged into the run (e.g. {"state": "FAILED", "error": {"message": "..."}})
    runs: dict[str, dict[str, Any] | None] = {}
    default_run: dict[str, Any] = {"state": "SUCCEEDED"}
    next_run: int = FIRST_RUN_ID
    lock = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.requests = []
            cls.runs = {}
            cls.default_run = {"state": "SUCCEEDED"}
            cls.next_run = FIRST_RUN_ID

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _record(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": urlparse(self.path).path, "query": urlparse(self.path).query,
                 "body": json.loads(raw) if raw else None}
        with FakeKFP.lock:
            FakeKFP.requests.append(entry)
        return entry

    def _answer(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        entry = self._record()
        if entry["path"].endswith("/healthz"):
            self._answer({"multi_user": False})
        elif entry["path"].endswith("/experiments"):
            self._answer({"experiments": [], "total_size": 0})
        elif "/runs/" in entry["path"]:
            run_id = entry["path"].rsplit("/", 1)[-1]
            with FakeKFP.lock:
                fields = FakeKFP.runs.get(run_id, FakeKFP.default_run)
            if fields is None:
                self._answer({"error_message": f"run {run_id} not found", "code": 5,
                              "message": f"run {run_id} not found"}, 404)
            else:
                self._answer({"run_id": run_id, **fields})
        else:
            self._answer({})

    def do_POST(self) -> None:  # noqa: N802
        entry = self._record()
        if entry["path"].endswith("/experiments"):
            self._answer({"experiment_id": "exp-1", "display_name": entry["body"]["display_name"]})
        elif entry["path"].endswith("/recurringruns"):
            self._answer({"recurring_run_id": "rr-1", **entry["body"]})
        elif entry["path"].endswith(":terminate"):  # POST /runs/{id}:terminate
            run_id = entry["path"].rsplit("/", 1)[-1].removesuffix(":terminate")
            with FakeKFP.lock:
                known = FakeKFP.runs.get(run_id, FakeKFP.default_run)
                if known is not None:
                    FakeKFP.runs[run_id] = {**known, "state": "CANCELED"}
            self._answer({}) if known is not None else self._answer({"message": f"run {run_id} not found"}, 404)
        elif entry["path"].endswith("/runs"):
            with FakeKFP.lock:
                run_id = f"run-{FakeKFP.next_run}"
                FakeKFP.next_run += 1
            self._answer({"run_id": run_id, "experiment_id": entry["body"].get("experiment_id"),
                          "display_name": entry["body"].get("display_name"), "state": "PENDING"})
        else:
            self._answer({"error": "unexpected"}, 404)


def posts(suffix: str) -> list[dict]:
    """The POST requests the fake received whose path ends with ``suffix``."""
    with FakeKFP.lock:
        return [r for r in FakeKFP.requests if r["method"] == "POST" and r["path"].endswith(suffix)]


@contextmanager
def serve_fake_kfp() -> Iterator[str]:
    """Run the fake on a free 127.0.0.1 port (state reset); yields its base URL."""
    FakeKFP.reset()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKFP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
