"""Sampling: ``generate(model_dir, output, classes=..., count=N)`` -> a dataset of synthetic flows.

Each flow starts from a real template of its class (presence mask from ``templates.npz``: which
headers each packet has and its option lengths), the model fills in every present bit, and the
metadata columns are completed so the output is an ordinary encoded dataset: timestamps drawn
from the class's inter-arrival distribution (``timing.json``), direction read from the generated
addresses, wire length from the generated IP length fields. Every class gets its own random
streams seeded from ``(seed, class name)``, so one process per class gives exactly the flows a
single call for all classes would.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from netdiffusion.dataset import PART_ROWS, Packets, write_fields, write_json, write_shard
from netdiffusion.fields import ABSENT, Layout
from netdiffusion.image import mask_from_lengths, matrix_to_image, save_png
from netdiffusion.model.data import load_templates, sample_timestamps, stratified_flows
from netdiffusion.model.train import MODEL_FILE, TEMPLATES_FILE, TIMING_FILE, WEIGHTS_DIR
from netdiffusion.names import file_name

log = logging.getLogger(__name__)

ETHERNET_BYTES = 14
# a class whose flows hold more than dataset.PART_ROWS rows is written in parts as they are generated,
# so memory stays bounded by a part (COUNT=5000 flows of ~900 packets held at once took ~26 GB:
# matrices, their masks and the concatenated copy)


def load_model_meta(model: str | os.PathLike) -> dict[str, Any]:
    path = Path(model) / MODEL_FILE
    if not Path(model).is_dir():
        raise FileNotFoundError(f"{model}: no such model directory")
    if not path.exists():
        raise FileNotFoundError(f"{model}: not a model directory (no {MODEL_FILE})")
    return json.loads(path.read_text())


def class_seed(seed: int, label: str) -> list[int]:
    """Per-class seed material: independent of which other classes share the call."""
    return [int(seed), zlib.crc32(label.encode())]


def pick_templates(lengths: np.ndarray, offsets: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Template flow per output flow, stratified so small counts keep the class's header mix.

    Every template is used ``count // n`` times; the rest are a :func:`stratified_flows` subset
    (dominant stack and length order, systematic draw, best of 32 offsets). Then shuffled. Far
    closer than independent draws (on zoom, 20 of 38 flows: 9 points off with one offset)."""
    n = len(offsets) - 1
    full, rest = divmod(count, n)
    picks = [np.tile(np.arange(n), full)]
    if rest:
        picks.append(stratified_flows(np.asarray(lengths) > 0, offsets, rest, rng))
    return rng.permutation(np.concatenate(picks))


def protocol_mix(matrix: np.ndarray, layout: Layout) -> dict[str, float]:
    """Share of packets carrying each header: the acceptance check of generated vs real flows."""
    presence = layout.presence(matrix)
    return {h: float(presence[:, i].mean()) if len(matrix) else 0.0 for i, h in enumerate(layout.headers)}


def directions_from_bits(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """0/1 per packet: is the source address nearer the first packet's destination (responder)?

    Generated addresses may carry a few flipped bits, so this compares Hamming distances to the
    two endpoints of packet 0 instead of testing equality. 0 where no IP header is present."""
    out = np.zeros(matrix.shape[0], dtype=np.int8)
    for header in ("ipv4", "ipv6"):
        if header not in layout.headers:
            continue
        src = matrix[:, layout.field_slice(f"{header}_src")]
        dst = matrix[:, layout.field_slice(f"{header}_dst")]
        present = (src != ABSENT).all(axis=1)
        if not present.any():
            continue
        first = int(np.argmax(present))
        d_init = (src != src[first]).sum(axis=1)
        d_resp = (src != dst[first]).sum(axis=1)
        out[present] = (d_resp < d_init)[present]
    return out


def wire_lengths(matrix: np.ndarray, layout: Layout) -> np.ndarray:
    """Frame length from the generated IP length fields (+ Ethernet), 0 where no IP header."""
    out = np.zeros(matrix.shape[0], dtype=np.int64)
    if "ipv4" in layout.headers:
        tl = layout.field_values(matrix, "ipv4_tl")
        out = np.where(tl >= 0, tl + ETHERNET_BYTES, out)
    if "ipv6" in layout.headers:
        plen = layout.field_values(matrix, "ipv6_len")
        out = np.where((plen >= 0) & (out == 0), plen + 40 + ETHERNET_BYTES, out)
    return out.astype(np.int32)


def generate(model: str | os.PathLike, output: str | os.PathLike, *, classes: list[str] | None = None,
             count: int = 10, seed: int = 0, batch: int | None = None, steps: int | None = None,
             sampler: str | None = None, images: bool = True, part_rows: int = PART_ROWS) -> dict[str, Any]:
    """Generate ``count`` flows per class into ``output`` (Parquet dataset + ``images/<class>/``).

    ``batch`` and ``steps`` default (None) to the model config's; given, they must be at least 1.
    A class is one shard ``<class>-s<seed>.parquet`` (flows in id order); one whose flows hold more
    than ``part_rows`` rows is written in parts ``<class>-s<seed>-pNNNN.parquet`` as its flows are
    generated (each part whole flows; the same rows, ids and timestamps as one shard would hold).
    Every argument is checked before ``output`` is created."""
    model_dir, output = Path(model), Path(output)
    for name, value in (("count", count), ("batch", batch), ("steps", steps), ("part_rows", part_rows)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{name} must be an integer of at least 1, not {value!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    meta = load_model_meta(model_dir)
    known = list(meta["classes"])
    # a class named twice is generated once (same seed: the same flows, the same file)
    wanted = list(dict.fromkeys(classes)) if classes else known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise ValueError(f"{model_dir}: model has no classes {unknown}; it knows {known}")
    _check_output(output, meta)
    layout = Layout.from_columns(meta["columns"])
    templates = load_templates(model_dir / TEMPLATES_FILE, known)
    timing = json.loads((model_dir / TIMING_FILE).read_text())

    if meta["backend"] == "native":
        fill = _native_filler(model_dir, meta, steps=steps, sampler=sampler)
    elif meta["backend"] == "sd":
        from netdiffusion.model.sd import sd_filler

        fill = sd_filler(model_dir, meta, steps=steps, sampler=sampler)
    else:
        raise ValueError(f"{model_dir}: unknown backend {meta['backend']!r}")
    batch = int(batch if batch is not None else (meta["config"].get("generation") or {}).get("batch", 4))
    output.mkdir(parents=True, exist_ok=True)
    write_fields(output, layout)

    started = time.time()
    per_class: dict[str, Any] = {}
    for label in wanted:
        t0 = time.time()
        rng = np.random.default_rng(class_seed(seed, label))
        tpl = templates[label]
        lengths_all, offsets = tpl.lengths, tpl.offsets
        chosen = pick_templates(lengths_all, offsets, count, rng)
        flow_lengths = np.minimum(np.diff(offsets)[chosen], int(meta["packets"]))
        flow_ids = [f"{file_name(label)}-s{seed}-{i:06d}" for i in range(count)]
        # drawn for all flows at once, in id order (what one shard holds); parts take their slices
        timestamps = sample_timestamps(timing[label], flow_lengths, rng)
        row_starts = np.r_[0, np.cumsum(flow_lengths)].astype(np.int64)
        stem = f"{file_name(label)}-s{seed}"
        part = _ClassPart(output, stem, label, meta.get("macros", {}).get(label, ""), flow_ids, timestamps,
                          row_starts, layout, meta, images, in_parts=int(row_starts[-1]) > part_rows)
        template_start = offsets[chosen]  # flow i: template rows template_start[i] + [0, flow_lengths[i])
        order = np.argsort(flow_lengths, kind="stable")  # similar lengths share a batch: less padding
        done: list[tuple[int, np.ndarray]] = []
        buffered = 0
        for b0 in range(0, count, batch):
            idx = order[b0 : b0 + batch]
            batch_seed = [*class_seed(seed, label), b0]
            # masks and directions per batch: built for every flow up front they cost as much memory
            # as the flows themselves
            spans = [slice(template_start[i], template_start[i] + flow_lengths[i]) for i in idx]
            masks = [mask_from_lengths(lengths_all[span], layout) for span in spans]
            directions = None if tpl.direction is None else [tpl.direction[span] for span in spans]
            out = fill(masks, known.index(label), batch_seed, directions)
            for i, m in zip(idx, out, strict=True):
                m = np.asarray(m, dtype=np.int8)
                if len(m) != flow_lengths[i]:
                    raise RuntimeError(f"{label}: the model returned {len(m)} rows for a {flow_lengths[i]}-packet flow")
                done.append((int(i), m))
                buffered += len(m)
            if part.in_parts and buffered >= part_rows:
                part.write(done)
                done, buffered = [], 0
        if done:
            part.write(done)
        # this call replaces the class's shards and images of this seed: earlier ones it did not write go
        for stale in [*output.glob(f"{stem}.parquet"), *output.glob(f"{stem}-p*.parquet")]:
            if stale.name not in part.written:
                stale.unlink()
        produced = {f"{fid}.png" for fid in flow_ids} if images else set()
        for stale in (output / "images" / file_name(label)).glob(f"{stem}-*.png"):
            if stale.name not in produced:
                stale.unlink()
        secs = time.time() - t0
        per_class[label] = {"flows": count, "packets": int(row_starts[-1]), "seconds": round(secs, 3),
                            "flows_per_s": round(count / max(secs, 1e-9), 4)}
        log.info("generated %d %s flows in %.1fs", count, label, secs)
    seconds = time.time() - started
    total = count * len(wanted)
    stats = {"model_id": meta["model_id"], "backend": meta["backend"], "flows": total, "seed": seed,
             "seconds": round(seconds, 3), "flows_per_s": round(total / max(seconds, 1e-9), 4),
             "per_class": per_class}
    _merge_summary(output, stats)
    return stats


class _ClassPart:
    """Writes generated flows of one class as shards (and their images): what one class's flows
    share, so that a part can be written while the next flows are generated. The shard is
    ``<stem>.parquet``, or ``<stem>-pNNNN.parquet`` in order when the class is written ``in_parts``;
    ``written`` holds the names."""

    def __init__(self, output: Path, stem: str, label: str, macro: str, flow_ids: list[str],
                 timestamps: np.ndarray, row_starts: np.ndarray, layout: Layout, meta: dict, images: bool,
                 *, in_parts: bool) -> None:
        self.output, self.stem, self.label, self.macro, self.flow_ids = output, stem, label, macro, flow_ids
        self.timestamps, self.row_starts, self.layout, self.meta = timestamps, row_starts, layout, meta
        self.images, self.in_parts = images, in_parts
        self.written: list[str] = []

    def write(self, flows: list[tuple[int, np.ndarray]]) -> None:
        """Flows ``(id index, matrix)`` as the next shard, in id order (each flow's rows together)."""
        flows = sorted(flows, key=lambda flow: flow[0])
        name = f"{self.stem}-p{len(self.written):04d}.parquet" if self.in_parts else f"{self.stem}.parquet"
        n_rows = np.array([len(m) for _, m in flows])
        matrix = np.concatenate([m for _, m in flows])
        starts = self.row_starts
        write_shard(Packets(
            flow_id=np.repeat(np.array([self.flow_ids[i] for i, _ in flows], dtype=object), n_rows),
            label=np.full(len(matrix), self.label, dtype=object),
            macro=np.full(len(matrix), self.macro, dtype=object),
            packet_index=np.concatenate([np.arange(n) for n in n_rows]).astype(np.int32),
            timestamp=np.concatenate([self.timestamps[starts[i]:starts[i + 1]] for i, _ in flows]),
            direction=np.concatenate([directions_from_bits(m, self.layout) for _, m in flows]),
            wire_length=wire_lengths(matrix, self.layout),
            source=np.full(len(matrix), self.meta["model_id"], dtype=object),
            frame=np.zeros(len(matrix), dtype=np.int64),
            nprint=matrix,
        ), self.output / name)
        self.written.append(name)
        if self.images:
            for i, m in flows:
                save_png(self.output / "images" / file_name(self.label) / f"{self.flow_ids[i]}.png",
                         matrix_to_image(m, rows=int(self.meta["packets"])))


def _check_output(output: Path, meta: dict) -> None:
    """Refuse an output folder that already holds shards of another dataset or model.

    Generated shards of the same model (other seeds or classes, parallel per-class calls) may
    share a folder; anything else would mix two layouts or two models under one summary. Each
    shard says who wrote it in its ``source`` column (a generated one: the model id), so a parallel
    call whose shard is written before its summary is recognised too."""
    import pyarrow.parquet as pq

    if not output.is_dir():
        return
    shards = [p for p in output.rglob("*.parquet") if not p.name.startswith(".")]
    sources: set[str] = set()
    for shard in shards:
        try:
            sources.update(str(s) for s in pq.read_table(shard, columns=["source"]).column("source").unique().to_pylist())
        except Exception:  # noqa: BLE001 - not a readable shard with a source column: not this model's
            sources.add("")
    others = sources - {meta["model_id"]}
    if others:
        models = sorted(s for s in others if s.startswith("netdiffusion-"))
        what = f"output of model {', '.join(models)}" if models else "a dataset that is not this model's output"
        raise ValueError(f"{output}: already holds {what} ({len(shards)} shards); this model is "
                         f"{meta['model_id']}: generate into an empty folder or one of its own")


def _merge_summary(output: Path, stats: dict) -> None:
    """summary.json accumulates per-class entries, so parallel per-class calls each add theirs."""
    path = output / "summary.json"
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = {}
    # each seed writes its own <class>-s<seed>.parquet, so a class's count is the sum over its
    # seeds' latest calls (a call with the same seed rewrites that file)
    per_class = dict(previous.get("per_class", {}))
    for label, entry in stats["per_class"].items():
        seeds = {**(per_class.get(label) or {}).get("seeds", {}), str(stats["seed"]): entry}
        per_class[label] = {**entry, "flows": sum(v["flows"] for v in seeds.values()),
                            "packets": sum(v["packets"] for v in seeds.values()), "seeds": seeds}
    merged = {"stage": "generate", "model_id": stats["model_id"], "backend": stats["backend"],
              "per_class": per_class}
    merged["flows"] = sum(v["flows"] for v in merged["per_class"].values())
    write_json(path, merged)


def _native_filler(model_dir: Path, meta: dict, *, steps: int | None, sampler: str | None):
    """A function (masks, class index, seed) -> generated matrices, for the native backend."""
    import torch

    from netdiffusion.model.native import PacketDiffusionTransformer, make_sampler, sample

    # on a GPU when there is one (the same seeds then give other flows than on CPU)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = PacketDiffusionTransformer.from_pretrained(str(model_dir / WEIGHTS_DIR)).eval().to(device)
    dcfg = meta["config"]["diffusion"]
    n_steps = int(steps if steps is not None else dcfg.get("sample_steps", 12))
    guidance = float(dcfg.get("guidance_scale", 1.0))
    scheduler = make_sampler(dcfg, sampler)
    columns = np.asarray(meta.get("active_columns", range(len(meta["columns"]))), dtype=np.int64)

    takes_direction = bool(net.config.get("direction_input", False))
    takes_end = bool(net.config.get("end_input", False))

    def fill(masks: list[np.ndarray], class_index: int, batch_seed: list[int],
             directions: list[np.ndarray] | None = None) -> list[np.ndarray]:
        if takes_direction and directions is None:
            raise ValueError(f"{model_dir}: the model takes packet directions, its templates have none")
        rows = max(len(m) for m in masks)
        mask = np.zeros((len(masks), rows, len(columns)), dtype=bool)
        row_mask = np.zeros((len(masks), rows), dtype=np.float32)
        direction = np.zeros((len(masks), rows), dtype=np.int64)
        to_end = np.zeros((len(masks), rows), dtype=np.int64)
        for j, m in enumerate(masks):
            mask[j, : len(m)] = m[:, columns]
            row_mask[j, : len(m)] = 1
            if takes_direction:
                direction[j, : len(m)] = directions[j][: len(m)]
            to_end[j, : len(m)] = np.arange(len(m))[::-1]
        gen = torch.Generator(device).manual_seed(int(np.random.SeedSequence(batch_seed).generate_state(1)[0]))
        labels = torch.full((len(masks),), class_index, dtype=torch.long, device=device)
        bits, _ = sample(net, torch.from_numpy(mask).to(device), labels, torch.from_numpy(row_mask).to(device),
                         scheduler, n_steps, guidance, gen,
                         direction=torch.from_numpy(direction).to(device) if takes_direction else None,
                         to_end=torch.from_numpy(to_end).to(device) if takes_end else None)
        arr = bits.cpu().numpy()
        out = []
        for j, m in enumerate(masks):
            # present bits the model never saw in training (outside its columns) come out unset
            full = np.where(m, 0, -1).astype(np.int8)
            full[:, columns] = arr[j, : len(m)]
            out.append(full)
        return out

    return fill
