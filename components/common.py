"""I/O plumbing shared by the components: URIs <-> local paths, merging fan-in artifacts, logging.

Nothing here knows about traffic: the stage logic is in ``netdiffusion``. Components call these
helpers so that a task gets local directories to hand to the library, whether its inputs are KFP
artifacts (local paths under ``kfp.local``, FUSE-mounted ``/gcs``/``/s3`` paths or ``s3://`` URIs on
a cluster) or user-given URIs (a local folder or ``s3://bucket/prefix``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger("netdiffusion.components")

MANIFEST = "manifest.csv"
FLOW_LABELS = "ndpi_flow_labels.csv"
MANIFEST_COLUMNS = ("path", "label", "macro", "source")


def setup_logging() -> None:
    """Log to stdout in the task's container (KFP shows stdout as the task log)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def stage_log(stage: str, **counts: object) -> str:
    """One machine-readable progress line per stage: ``stage=<name> key=value ...``."""
    line = f"stage={stage} " + " ".join(f"{k}={v}" for k, v in counts.items())
    log.info(line)
    return line


# ------------------------------------------------------------------------------------------ URIs
def is_s3(uri: str) -> bool:
    """Object-storage URI (everything else is a local or mounted path)."""
    return uri.startswith("s3://")


def fetch(uri: str, scratch: str | os.PathLike) -> Path:
    """A local path for ``uri``: local paths as they are, ``s3://`` objects/prefixes downloaded."""
    uri = uri.removeprefix("file://")
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{uri}: does not exist")
        return path
    from netdiffusion.tracking import storage

    bucket, key = storage.split_s3_uri(uri)
    target = Path(scratch) / bucket / key
    if storage.list_uri(uri.rstrip("/") + "/"):
        return storage.download_dir(uri, target)
    return storage.download_file(uri, target)


def publish(local: str | os.PathLike, uri: str) -> int:
    """Copy a local file tree to ``uri`` (``s3://`` prefix or local directory); returns files copied."""
    local = Path(local)
    if is_s3(uri):
        from netdiffusion.tracking import storage

        return storage.upload_dir(local, uri)
    files = [p for p in local.rglob("*") if p.is_file()]
    dest = Path(uri.removeprefix("file://"))
    for f in files:
        target = dest / f.relative_to(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return len(files)


# -------------------------------------------------------------------------------------- manifests
def _manifest_rows(manifest: Path) -> list[dict[str, str]]:
    """The rows of a manifest file; one without its columns, or a row without path or label, is an error."""
    # utf-8-sig: a byte order mark (spreadsheet exports) would otherwise hide the "path" column
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest}: manifest lacks column(s) {sorted(missing)}")
        rows = []
        for r in reader:
            row = {k: (r.get(k) or "") for k in MANIFEST_COLUMNS}
            row["label"], row["path"] = row["label"].strip(), row["path"].strip()  # as encode reads them
            if not row["path"] or not row["label"]:
                raise ValueError(f"{manifest}: line {reader.line_num}: empty path or label")
            rows.append(row)
    return rows


def read_manifest(root_uri: str, scratch: str | os.PathLike | None = None,
                  classes: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of ``<root>/manifest.csv`` (path,label,macro,source), optionally only some classes.

    A local folder without a manifest is read the way ``netdiffusion encode`` reads a folder:
    every capture below it, labelled by its class folder (or a ``label_NN.pcap`` name). A remote
    manifest is downloaded into ``scratch``, or without one into a temporary folder removed after
    reading (tasks must not leave files behind)."""
    local_root = Path(root_uri.removeprefix("file://"))
    if not is_s3(root_uri) and not local_root.exists():
        raise FileNotFoundError(f"{root_uri}: input folder not found")
    if not is_s3(root_uri) and local_root.is_dir() and not (local_root / MANIFEST).exists():
        manifest: Path | str = f"{local_root} (no {MANIFEST}: labels from class folders / file names)"
        rows = _rows_from_folder(local_root)
    elif scratch is None:
        with tempfile.TemporaryDirectory(prefix="manifest-") as tmp:
            manifest = fetch(root_uri.rstrip("/") + "/" + MANIFEST, tmp)
            rows = _manifest_rows(manifest)
    else:
        manifest = fetch(root_uri.rstrip("/") + "/" + MANIFEST, scratch)
        rows = _manifest_rows(manifest)
    wanted = {c.strip() for c in classes if c.strip()}
    if wanted:
        unknown = wanted - {r["label"] for r in rows}
        if unknown == wanted:
            raise ValueError(f"{manifest}: no captures for class(es) {', '.join(sorted(unknown))}")
        if unknown:  # the others still run; the local run's summary names these too
            log.warning("%s: no captures for class(es) %s: skipped", manifest, ", ".join(sorted(unknown)))
        rows = [r for r in rows if r["label"] in wanted]
    if not rows:
        raise ValueError(f"{manifest}: no captures listed")
    return rows


def _rows_from_folder(root: Path) -> list[dict[str, str]]:
    """Manifest rows for every capture below ``root`` (the encoder's discovery and label rules)."""
    from netdiffusion.encode import discover_inputs
    from netdiffusion.labels import label_for

    rows = []
    for path, source, in_class_folder in discover_inputs([root]):
        label = label_for(path, prefer_folder=in_class_folder)
        rows.append({"path": source, "label": label.label, "macro": label.macro, "source": ""})
    log.info("%s: no %s; %d captures labelled by folder / file name", root, MANIFEST, len(rows))
    return rows


def plan_shards(root_uri: str, rows: Sequence[dict[str, str]], shards: int) -> list[str]:
    """Split captures into ``shards`` groups of similar total size (largest first, greedy).

    Sizes are known only for local inputs; for ``s3://`` the split is round-robin. Each shard is a
    JSON string ``{"index", "root", "files": [manifest rows]}`` so it can be a ParallelFor item.
    """
    shards = max(1, min(int(shards), len(rows)))
    local_root = None if is_s3(root_uri) else Path(root_uri.removeprefix("file://"))

    def size(row: dict[str, str]) -> int:
        if local_root is None:
            return 0
        p = local_root / row["path"]
        return p.stat().st_size if p.exists() else 0

    groups: list[list[dict[str, str]]] = [[] for _ in range(shards)]
    totals = [0] * shards
    for row in sorted(rows, key=lambda r: (-size(r), r["path"])):
        i = totals.index(min(totals))
        groups[i].append(dict(row))
        totals[i] += size(row) or 1
    return [json.dumps({"index": i, "root": root_uri, "files": g}) for i, g in enumerate(groups) if g]


def write_manifest(rows: Iterable[dict[str, str]], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in MANIFEST_COLUMNS} for r in rows)
    return path


# ---------------------------------------------------------------------------------- fan-in merges
def merge_datasets(dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Make one dataset directory from several (fan-in of ParallelFor outputs).

    Shards are linked (copied where links are impossible) under ``part-<i>/`` so names never clash;
    all parts must share one ``fields.json`` since a dataset has one column layout.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fields_text = None
    for i, d in enumerate(dirs):
        d = Path(d)
        fields = d / "fields.json"
        if not fields.exists():
            raise FileNotFoundError(f"{d}: not an encoded dataset (no fields.json)")
        text = fields.read_text()
        if fields_text is None:
            fields_text = text
            shutil.copy2(fields, out / "fields.json")
        elif json.loads(text) != json.loads(fields_text):
            raise ValueError(f"{d}: column layout differs from the other parts, cannot merge")
        for shard in sorted(d.rglob("*.parquet")):
            if shard.name.startswith("."):
                continue
            target = out / f"part-{i:04d}" / shard.relative_to(d)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(shard, target)
    if fields_text is None:
        raise ValueError("no datasets to merge")
    return out


def nothing_encoded(dirs: Sequence[str | os.PathLike]) -> str:
    """Why encode datasets hold no flow at all, from their ``summary.json``: every capture named
    with its reason (rejected, or read without one usable packet), for a task that cannot go on."""
    read, reasons = 0, []
    for d in dirs:
        try:
            summary = json.loads((Path(d) / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        read += int(summary.get("files_read") or 0)
        reasons += [f"{r.get('file')}: {r.get('reason')}" for r in summary.get("files_rejected") or []]
        reasons += [f"{f.get('file')}: 0 of {f.get('packets_read')} packets kept ("
                    + (", ".join(f"{k}: {v}" for k, v in sorted((f.get("skipped") or {}).items())) or "none usable") + ")"
                    for f in summary.get("files") or [] if not f.get("flows")]
    return (f"no flows encoded from any capture ({read} read, {len(reasons)} without flows): "
            + ("; ".join(reasons) or "see the encode tasks' logs"))


def merge_trees(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, pattern: str = "*") -> int:
    """Copy several file trees into one (e.g. per-class ``pcaps/<class>/`` dirs); returns file count."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for d in dirs:
        d = Path(d)
        for f in sorted(d.rglob(pattern)):
            if f.is_file():
                target = out / f.relative_to(d)
                if target.exists():
                    raise FileExistsError(f"{target}: produced by two tasks")
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(f, target)
                count += 1
    return count


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def as_list(value: object) -> list:
    """Pipeline list parameters arrive as lists or JSON text (and Collected ints as floats)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [v.strip() for v in text.split(",") if v.strip()]
    return list(value)  # type: ignore[call-overload]


def evaluation_headline(report: dict) -> dict[str, float]:
    """A few numbers from an evaluation ``report.json`` for logs and summaries (missing keys skipped)."""

    def get(*keys: str) -> object:
        node: object = report
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    picks = {
        "jsd": get("similarity", "overall", "jsd"),
        "tvd": get("similarity", "overall", "tvd"),
        "hd": get("similarity", "overall", "hd"),
        "jsd_floor": get("similarity", "floor", "jsd"),
        "jsd_random": get("random_baseline", "similarity", "jsd"),
        "tstr_rf_accuracy": get("utility", "train_synthetic_test_real", "micro", "rf", "accuracy"),
        "trtr_rf_accuracy": get("utility", "train_real_test_real", "micro", "rf", "accuracy"),
    }
    return {k: round(float(v), 4) for k, v in picks.items() if isinstance(v, (int, float))}
