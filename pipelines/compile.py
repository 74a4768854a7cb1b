"""Compile the pipelines to IR YAML in ``pipelines/compiled/`` (``make pipelines``).

``--check`` compiles to a temporary directory and fails if the committed files differ, so a change
to a component or pipeline without recompiling is caught by the tests.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "compiled"


def pipelines() -> dict:
    """name -> pipeline function (imported lazily: kfp import costs ~1 s)."""
    from pipelines.generate import generate
    from pipelines.refresh import refresh

    return {"refresh": refresh, "generate": generate}


def compile_all(output: str | Path = COMPILED) -> list[Path]:
    """Compile every pipeline to ``<output>/<name>.yaml``; returns the written paths."""
    from kfp import compiler

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, func in pipelines().items():
        path = output / f"{name}.yaml"
        compiler.Compiler().compile(pipeline_func=func, package_path=str(path))
        written.append(path)
    return written


def stale(compiled: str | Path = COMPILED) -> list[str]:
    """Names of compiled files that differ from a fresh compile (with a short diff each)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in compile_all(tmp):
            committed = Path(compiled) / fresh.name
            if not committed.exists():
                problems.append(f"{committed}: missing")
                continue
            a, b = _body(committed.read_text()), _body(fresh.read_text())
            if a != b:
                diff = list(difflib.unified_diff(a, b, str(committed), "fresh compile", lineterm="", n=0))[:12]
                problems.append(f"{committed}: stale\n" + "\n".join(diff))
    return problems


def _body(text: str) -> list[str]:
    """The compiled spec without the leading ``#`` comment block (its dict order varies by run)."""
    return [line for line in text.splitlines() if not line.startswith("#")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if compiled files are stale")
    parser.add_argument("--output", default=str(COMPILED))
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.output)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run `make pipelines` to recompile", file=sys.stderr)
        return 1 if problems else 0
    for path in compile_all(args.output):
        print(f"compiled {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
