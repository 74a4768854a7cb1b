"""Encode component: real captures -> Parquet dataset shards, one task per input shard."""


from typing import List  # noqa: UP035 (KFP reads typing annotations)

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_for

IMAGE = image_for("encode")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def plan_shards(input_uri: str, classes: List[str], shards: int) -> List[str]:  # noqa: UP006
    """Read ``<input_uri>/manifest.csv`` and split its captures into ``shards`` balanced groups.

    Each item is a JSON string for one ``encode_shard`` task (a ParallelFor item).
    """
    from components.common import plan_shards as split
    from components.common import read_manifest, setup_logging, stage_log

    setup_logging()
    rows = read_manifest(input_uri, classes=classes)
    groups = split(input_uri, rows, shards)
    stage_log("plan", captures=len(rows), classes=len({r["label"] for r in rows}), shards=len(groups))
    return groups


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def list_classes(input_uri: str, classes: List[str], model: Input[Model]) -> List[str]:  # noqa: UP006
    """The classes to generate: those asked for (all of the manifest's if none) that the model learned.

    A class whose captures all failed to encode (truncated, unsupported, empty) has no flows, so
    the model never saw it: it is skipped with a logged reason instead of failing its generate
    task and with it the whole run. A separate single-output task because ParallelFor fans out
    over a task's ``Output``.
    """
    import json
    import logging
    from pathlib import Path

    from components.common import read_manifest, setup_logging, stage_log

    setup_logging()
    rows = read_manifest(input_uri, classes=classes)
    wanted = sorted({r["label"] for r in rows})
    known = {str(c) for c in json.loads((Path(model.path) / "model.json").read_text()).get("classes", [])}
    skipped = [c for c in wanted if c not in known]
    for label in skipped:
        logging.getLogger("netdiffusion.pipeline").warning(
            "class %s: skipped, no flows of it were encoded (its captures were all rejected or empty; "
            "see the encode task's log)", label)
    chosen = [c for c in wanted if c in known]
    if not chosen:
        raise ValueError(f"{input_uri}: none of the classes {', '.join(wanted)} has encoded flows to generate")
    stage_log("classes", generate=len(chosen), skipped=len(skipped))
    return chosen


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def encode_shard(shard: str, packets: int, data: Output[Dataset]) -> int:
    """Encode one shard's captures (labels from the manifest) with ``netdiffusion.encode.encode_paths``."""
    import json
    import logging
    import os
    import tempfile
    from pathlib import Path

    from components.common import FLOW_LABELS, fetch, is_s3, setup_logging, stage_log, write_manifest
    from netdiffusion.encode import encode_paths

    setup_logging()
    spec = json.loads(shard)
    root = spec["root"].rstrip("/")
    # downloads (S3 roots) live only while they are encoded: a run must not leave captures behind
    with tempfile.TemporaryDirectory(prefix="encode-") as tmp:
        scratch = Path(tmp)
        rows, sources = [], {}
        for row in spec["files"]:
            try:
                local = fetch(f"{root}/{row['path']}", scratch)
            except Exception as exc:  # noqa: BLE001 (a missing / unreadable capture must not end the run)
                # encode_paths rejects the path it cannot read, names it and counts it in its summary
                logging.getLogger("netdiffusion.pipeline").error("%s/%s: %s", root, row["path"], exc)
                # a local file by the path the manifest gave (not a scratch name the user never wrote)
                local = scratch / "missing" / row["path"] if is_s3(root) else Path(root.removeprefix("file://")) / row["path"]
            # absolute, links not followed: rejections and flow sources name the file the manifest names
            rows.append({**row, "path": os.path.abspath(local)})
            if is_s3(root):  # its URI, not the scratch path: sources seed flow ids and shard names
                sources[os.path.abspath(local)] = f"{root}/{row['path']}"
        manifest = write_manifest(rows, scratch / "manifest.csv")
        try:
            flow_labels = fetch(f"{root}/{FLOW_LABELS}", scratch)
        except Exception:  # noqa: BLE001 (the per-flow labels file is optional)
            flow_labels = None
        summary = encode_paths([r["path"] for r in rows], data.path, manifest=manifest,
                               flow_labels=flow_labels, packets=int(packets), source_names=sources)
    per_label = summary.get("flows", {})
    flows = int(sum(per_label.values())) if isinstance(per_label, dict) else int(per_label)
    rejected = len(summary.get("files_rejected", []))
    data.metadata.update({"shard": spec["index"], "captures": len(rows), "flows": flows,
                          "packets": int(summary.get("packets", 0)), "rejected": rejected})
    stage_log("encode", shard=spec["index"], captures=len(rows), flows=flows, rejected=rejected,
              packets=summary.get("packets", 0))
    return flows
