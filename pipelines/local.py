"""Run the pipelines on this machine with ``kfp.local`` (``make run``, ``netdiffusion run``).

Each task runs as a subprocess of the current Python (``SubprocessRunner(use_venv=False)``), so the
installed ``netdiffusion`` and ``components`` packages are used as they are. KFP keeps its artifacts
under ``<out>/kfp/<run>/<task>/``; at the end the pipeline outputs are copied to the documented
places (``<out>/pcaps/<class>/``, ``<out>/report/``, ``<out>/validation/``, ``<out>/model/``) and
MLflow writes ``<out>/mlflow.db`` with artifacts in ``<out>/mlartifacts``.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("netdiffusion.pipelines")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Preset:
    """Sizes for a local run; ``default`` is what ``make run`` uses (CPU, about 5 min on 2 quiet cores)."""

    config: str
    count: int
    packets: int
    encode_shards: int
    classes: tuple[str, ...] = ()
    quick_evaluation: bool = False


PRESETS: dict[str, Preset] = {
    # all classes, the CPU model the model stage sizes for 5-8 min of training on 2 cores
    "default": Preset(config="default", count=8, packets=1024, encode_shards=2),
    # seconds per stage: tests and smoke runs (output is not useful traffic)
    "tiny": Preset(config="tiny", count=2, packets=32, encode_shards=2, classes=("facebook", "webex"),
                   quick_evaluation=True),
}


def default_input() -> str:
    """The sample data folder: ``data/sample`` if ``make sample-data`` made it, else the shared data."""
    sample = REPO / "data" / "sample"
    if (sample / "manifest.csv").exists():
        return str(sample)
    from netdiffusion.sample_data import shared_data_dir

    shared = shared_data_dir()
    if shared is None:
        raise FileNotFoundError("no sample data: run `make sample-data` (or pass --input)")
    return str(shared)


def init_local(out: Path) -> Path:
    """Initialise ``kfp.local`` with a pipeline root under ``out``; returns that root."""
    from kfp import local

    root = out / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    # components declare their container image; SubprocessRunner warns that it is not used locally
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    # display names, accelerators and Kubernetes settings only matter on a cluster
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _TailedStdout:
    """Writes through to ``stream`` and keeps the last lines written: kfp.local prints each task's log
    to ``sys.stdout`` and keeps no copy, so this is where a failed task's reason can be read back."""

    def __init__(self, stream: Any, keep: int = 2000) -> None:
        self.stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = ""

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self._lines.extend(complete)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def lines(self) -> list[str]:
        return [*self._lines, self._partial]

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ... of the real stream
        return getattr(self.stream, name)


def _failure_reason(lines: list[str]) -> str:
    """The exception line (``ValueError: ...``) of the last traceback in the last task's log, or ''."""
    lines = [_ANSI.sub("", line).rstrip() for line in lines]
    started = max((i for i, line in enumerate(lines) if "Executing task" in line), default=0)
    task_log = lines[started:]
    tracebacks = [i for i, line in enumerate(task_log) if line.strip() == "Traceback (most recent call last):"]
    if not tracebacks:
        return ""
    header = task_log[tracebacks[-1]]
    indent = len(header) - len(header.lstrip())
    for line in task_log[tracebacks[-1] + 1:]:
        body = line[indent:]
        if line.strip() and not body[:1].isspace() and len(line) - len(line.lstrip()) == indent:
            return body.strip()
    return ""


@contextlib.contextmanager
def explain_task_failure() -> Iterator[None]:
    """Run a ``kfp.local`` pipeline; if it fails, raise ``RuntimeError`` naming the failed task *and* its
    error (the last line of the task's traceback) instead of kfp's bare "Inner task failed: 'task'".

    ``builtins.print`` is restored afterwards: kfp.local indents task output by swapping it per
    task, and tasks running side by side (ParallelFor) restore each other's swaps, leaving its
    indenting function in place; numba, imported after the run, then failed to start
    ("module 'kfp.local.logging_utils' has no attribute 'indented_print_function'")."""
    tail = _TailedStdout(sys.stdout)
    sys.stdout = tail
    original_print = builtins.print
    try:
        yield
    except RuntimeError as exc:
        message = _ANSI.sub("", str(exc))
        reason = _failure_reason(tail.lines())
        if reason and reason not in message:
            message = f"{message.rstrip('.')}: {reason}"
        if message == str(exc):
            raise
        raise RuntimeError(message) from exc
    finally:
        builtins.print = original_print
        if sys.stdout is tail:
            sys.stdout = tail.stream


def _replace_tree(src: str | os.PathLike, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def run_refresh(out: str | os.PathLike = "out", *, input_uri: str | None = None, classes: list[str] | None = None,
                preset: str = "default", count: int | None = None, packets: int | None = None,
                config: str | None = None, seed: int = 0, tcpreplay: bool = False,
                backend: str = "native") -> dict[str, Any]:
    """The whole ``refresh`` pipeline locally; returns a summary (paths, per-class counts, metrics)."""
    from pipelines.refresh import refresh

    p = PRESETS[preset]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_local(out)
    user_input = input_uri
    input_uri = str(Path(input_uri).resolve()) if input_uri and "://" not in input_uri else (input_uri or default_input())
    if "://" not in input_uri and not Path(input_uri).exists():
        raise FileNotFoundError(f"{user_input or input_uri}: input folder not found")
    # a preset's class choice is for the sample data; another input runs all its classes by default
    chosen = list(classes or (p.classes if user_input is None else ()))
    started = time.monotonic()
    with explain_task_failure():
        task = refresh(input_uri=input_uri, classes=chosen, count=p.count if count is None else count, packets=p.packets if packets is None else packets,
                       backend=backend, encode_shards=p.encode_shards,
                       config=config or (p.config if backend == "native" else "sd-tiny"), seed=seed, tcpreplay=tcpreplay,
                       quick_evaluation=p.quick_evaluation, tracking_out=str(out))
    seconds = time.monotonic() - started
    outputs = task.outputs
    paths = {
        "pcaps": _replace_tree(outputs["pcaps"].path, out / "pcaps"),
        "validation": _replace_tree(outputs["validation"].path, out / "validation"),
        "report": _replace_tree(outputs["report"].path, out / "report"),
        "model": _replace_tree(outputs["model"].path, out / "model"),
    }
    registered = json.loads(outputs["registered"]) if outputs["registered"] else {}
    summary = _summary(out, paths, registered, seconds, _folder_labels(out / "kfp", Path(outputs["pcaps"].path)))
    summary["captures"] = _encode_totals(out / "kfp", Path(outputs["model"].path))
    summary["classes_without_pcaps"] = _classes_without_pcaps(input_uri, chosen, summary)
    (out / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def run_generate(out: str | os.PathLike = "out", *, model: str, classes: list[str] | None = None,
                 count: int = 10, seed: int = 0, output_uri: str = "", tracking_uri: str = "") -> dict[str, Any]:
    """The ``generate`` pipeline locally from a model URI/dir.

    Outputs land in ``<out>/generated/{pcaps,validation,run_summary.json}`` so a refresh's ``<out>/pcaps``
    and ``<out>/run_summary.json`` are kept."""
    from pipelines.generate import generate

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_local(out)
    if not tracking_uri:
        from netdiffusion.tracking.settings import TrackingSettings

        tracking_uri = TrackingSettings.load(out=out).tracking_uri
    started = time.monotonic()
    with explain_task_failure():
        task = generate(model_uri=model, classes=list(classes or []), count=count, seed=seed, generate_gpus=0,
                        output_uri=output_uri, tracking_uri=tracking_uri)
    paths = {"pcaps": _replace_tree(task.outputs["pcaps"].path, out / "generated" / "pcaps"),
             "validation": _replace_tree(task.outputs["validation"].path, out / "generated" / "validation")}
    summary = _summary(out, paths, {}, time.monotonic() - started,
                       _folder_labels(out / "kfp", Path(task.outputs["pcaps"].path)))
    # next to its pcaps: <out>/run_summary.json is the refresh run's and stays
    (out / "generated" / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _summary(out: Path, paths: dict[str, Path], registered: dict, seconds: float,
             folder_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Per-class pcap counts and validation status, evaluation headline, where everything is.

    ``folder_labels`` maps a pcap folder (``names.file_name(label)``, e.g. ``game_traffic-be983f1a``)
    back to its class (``game traffic``), so a label that is not file-safe has one row, not two."""
    folder_labels = folder_labels or {}
    per_class: dict[str, dict[str, Any]] = {}
    for class_dir in sorted(p for p in paths["pcaps"].rglob("*") if p.is_dir()):
        pcaps = list(class_dir.glob("*.pcap"))
        if pcaps:
            per_class[folder_labels.get(class_dir.name, class_dir.name)] = {"pcaps": len(pcaps)}
    validation = _read_json(paths["validation"] / "report.json")
    for folder, row in _per_class_rows(validation).items():
        per_class.setdefault(folder_labels.get(folder, folder), {}).update(row)
    from components.common import evaluation_headline

    report = _read_json(paths["report"] / "report.json") if "report" in paths else {}
    headline = evaluation_headline(report)
    per_class_similarity = (report.get("similarity") or {}).get("per_class") or {}
    for label, stats in per_class_similarity.items():
        if isinstance(stats, dict) and isinstance(stats.get("jsd"), (int, float)):
            per_class.setdefault(label, {})["jsd"] = round(float(stats["jsd"]), 3)
    files = {name: str(path) for name, path in paths.items()}
    if (out / "mlflow.db").exists():
        files["mlflow"] = str(out / "mlflow.db")
    from netdiffusion.tracking.settings import TrackingSettings, ui_hint

    try:
        hint = ui_hint(TrackingSettings.load(out=out))
    except Exception as exc:  # noqa: BLE001 - the hint must never fail a finished run
        hint = f"MLflow UI: unavailable ({exc})"
    return {"seconds": round(seconds, 1), "classes": per_class, "evaluation": headline,
            "registered": registered, "paths": files, "mlflow_ui": hint}


def _run_dir(root: Path, artifact: Path) -> Path | None:
    """The run's folder under ``root``: ``artifact`` is any output of the run."""
    try:
        return root / artifact.resolve().relative_to(root.resolve()).parts[0]
    except (ValueError, IndexError):
        return None


def _folder_labels(root: Path, artifact: Path) -> dict[str, str]:
    """pcap folder -> class, from this run's repair reports (``flows``: ``label``, ``file`` =
    ``<folder>/<name>.pcap``)."""
    run_dir = _run_dir(root, artifact)
    labels: dict[str, str] = {}
    for path in sorted(run_dir.glob("**/repair-flows/**/repair_report.json")) if run_dir else []:
        for flow in _read_json(path).get("flows") or []:
            parts = Path(str(flow.get("file", ""))).parts
            if len(parts) > 1 and flow.get("label") is not None:
                labels[parts[0]] = str(flow["label"])
    return labels


def _encode_totals(root: Path, artifact: Path) -> dict[str, Any]:
    """Captures read and rejected (with reasons) by this run's encode tasks, from their summaries.

    ``artifact`` is any output of the run: its first folder under ``root`` is the run's."""
    run_dir = _run_dir(root, artifact)
    if run_dir is None:
        return {}
    read, rejected, truncated, without_flows = 0, [], [], []
    for path in sorted(run_dir.glob("for-loop-*/encode-shard/**/summary.json")):
        encoded = _read_json(path)
        read += int(encoded.get("files_read") or 0)
        rejected += list(encoded.get("files_rejected") or [])
        truncated += list(encoded.get("files_truncated") or [])
        # read, but not one packet kept (ARP only, every packet truncated...): say which and why
        without_flows += [{"file": f.get("file"), "label": f.get("label"), "packets_read": f.get("packets_read"),
                           "skipped": f.get("skipped") or {}}
                          for f in encoded.get("files") or [] if not f.get("flows")]
    return {"read": read, "rejected": rejected, "truncated": truncated, "without_flows": without_flows}


def _classes_without_pcaps(input_uri: str, chosen: list[str], summary: dict[str, Any]) -> dict[str, str]:
    """Classes asked for (or, without ``--classes``, in the input's manifest) that got no pcaps, with
    why: a run that leaves a class out must say so in its summary, not only in a task's log."""
    from components.common import read_manifest

    try:
        rows = read_manifest(input_uri)
    except (OSError, ValueError):
        rows = []
    rejected: dict[str, int] = {}
    for r in (summary.get("captures") or {}).get("rejected") or []:
        file = str(r.get("file"))  # the capture's path where the encode task read it
        label = next((row["label"] for row in rows
                      if file == row["path"] or file.endswith("/" + row["path"].removeprefix("./"))), None)
        if label is not None:
            rejected[label] = rejected.get(label, 0) + 1
    empty: dict[str, int] = {}
    for f in (summary.get("captures") or {}).get("without_flows") or []:
        empty[str(f.get("label"))] = empty.get(str(f.get("label")), 0) + 1
    listed = {r["label"] for r in rows}
    out = {}
    for label in list(chosen) or sorted(listed):
        if label in summary["classes"]:
            continue
        if rows and label not in listed:
            out[label] = "not in the input's manifest"
        elif label in rejected or label in empty:
            out[label] = ", ".join(([f"{rejected[label]} of its captures rejected (above)"] if label in rejected else [])
                                   + ([f"{empty[label]} of its captures without flows (above)"] if label in empty else []))
        else:
            out[label] = "no flows encoded or generated (see the task logs)"
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _per_class_rows(validation: dict) -> dict[str, dict[str, Any]]:
    """Validation report (``files``: one record per pcap, ``file`` = ``<class>/<name>.pcap``) ->
    {class: {valid, invalid, packets}}."""
    rows: dict[str, dict[str, Any]] = {}
    for rec in validation.get("files") or []:
        label = Path(str(rec.get("file", ""))).parent.name or "?"
        row = rows.setdefault(label, {"valid": 0, "invalid": 0, "packets": 0})
        row["valid" if rec.get("ok") else "invalid"] += 1
        row["packets"] += int(rec.get("packets") or 0)
    return rows


def format_summary(summary: dict[str, Any]) -> str:
    """The table printed at the end of a local run."""
    rows = summary["classes"]
    order = ["pcaps", "valid", "invalid", "packets", "jsd"]
    keys = sorted({k for r in rows.values() for k in r}, key=lambda k: (order.index(k) if k in order else 99, k))
    header = ["class", *keys]
    body = [[label, *(str(r.get(k, "-")) for k in keys)] for label, r in sorted(rows.items())]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body, strict=False)] if body else [5]
    lines = ["", "summary:", "  ".join(str(x).ljust(w) for x, w in zip(header, widths, strict=False))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=False)) for row in body]
    if "jsd" in keys and any("jsd" not in r for r in rows.values()):
        lines.append("(jsd '-': the class has no held-out real flows to compare with; see report.md)")
    captures = summary.get("captures") or {}
    if captures:
        lines.append(f"captures: {captures['read']} read, {len(captures['rejected'])} rejected"
                     + (f", {len(captures['without_flows'])} without flows" if captures.get("without_flows") else "")
                     + (f", {len(captures['truncated'])} cut short" if captures.get("truncated") else ""))
        lines += [f"  rejected {r.get('file')}: {r.get('reason')}" for r in captures["rejected"]]
        lines += [f"  cut short {r.get('file')}: {r.get('reason')}; kept the {r.get('packets_read')} complete "
                  f"packet{'' if r.get('packets_read') == 1 else 's'} before the cut"
                  for r in captures.get("truncated") or []]
        for f in captures.get("without_flows") or []:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(f.get("skipped", {}).items())) or "no packets kept"
            lines.append(f"  no flows from {f.get('file')} (class {f.get('label')}): "
                         f"0 of {f.get('packets_read')} packets kept ({why})")
    for label, why in (summary.get("classes_without_pcaps") or {}).items():
        lines.append(f"class {label}: no pcaps: {why}")
    for k, v in summary.get("evaluation", {}).items():
        lines.append(f"evaluation {k}: {v}")
    reg = summary.get("registered") or {}
    if reg.get("model_uri"):
        lines.append(f"registered {reg['model_uri']} (alias {reg.get('alias') or '-'}, run {reg.get('run_id')})")
        if not reg.get("promoted") and reg.get("reason"):  # why models:/NAME@champion is not this model
            lines.append(f"not champion: {reg['reason']}")
    lines.append(f"finished in {summary['seconds']:.0f} s")
    for name, path in summary["paths"].items():
        lines.append(f"{name:>10}: {path}")
    if summary.get("mlflow_ui"):
        lines.append(summary["mlflow_ui"])
    return "\n".join(lines)
