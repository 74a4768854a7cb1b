"""Run every benchmark (``bench/bench_*.py``) and write its JSON to ``bench/results/<name>.json``.

Each benchmark module exposes ``main() -> dict``. Benchmarks are measurements, never assertions:
they report numbers (and the anchors measured in the same run) for closing notes and docs.
Run one: ``python -m bench.run_all encode``.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    modules = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    if names:
        modules = [m for m in modules if m.removeprefix("bench_") in names or m in names]
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in modules:
        print(f"== {name}", flush=True)
        started = time.time()
        try:
            result = importlib.import_module(f"bench.{name}").main()
            status = "ok"
        except Exception as exc:  # a failing benchmark is reported, the others still run
            traceback.print_exc()
            result, status = {"error": f"{type(exc).__name__}: {exc}"}, "error"
            failed += 1
        record = {
            "benchmark": name.removeprefix("bench_"),
            "status": status,
            "seconds": round(time.time() - started, 2),
            "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
            "result": result,
        }
        out = RESULTS / f"{name.removeprefix('bench_')}.json"
        out.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(json.dumps(record, indent=2, default=str))
    print(f"{len(modules) - failed} benchmarks ok, {failed} failed; results in {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
