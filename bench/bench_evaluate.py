"""Evaluation on the shared real captures: runtime, real-vs-real floor, random baseline.

Encodes the shared captures (first 1,024 packets per flow), splits them into ``train`` and
held-out ``real`` halves -- by capture file for classes with several files, by flow otherwise --
and evaluates two stand-in "generators" against them: ``noisy-copy`` (the training flows with 2 %
of their present bits flipped: a memorising, slightly noisy generator) and ``random`` (training
flows with every present bit random). Reports the headline numbers and the seconds each took.
Run alone: ``python -m bench.run_all evaluate``; set ``NETDIFFUSION_EVAL_QUICK=1`` for --quick.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from netdiffusion.dataset import Packets, read_layout, read_packets, write_fields, write_shard

SHARED = Path(os.environ.get("NETDIFFUSION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def split_train_real(packets: Packets, seed: int = 0) -> np.ndarray:
    """Per-packet mask of the training half: whole capture files where a class has several."""
    rng = np.random.default_rng(seed)
    flow_ids, inverse = np.unique(packets.flow_id, return_inverse=True)
    first = np.unique(inverse, return_index=True)[1]
    flow_label, flow_source = packets.label[first], packets.source[first]
    train_flow = np.zeros(flow_ids.size, dtype=bool)
    for label in np.unique(flow_label):
        idx = np.flatnonzero(flow_label == label)
        sources = np.unique(flow_source[idx])
        if sources.size >= 2:
            chosen = set(rng.permutation(sources)[: sources.size // 2 + sources.size % 2])
            train_flow[idx] = [s in chosen for s in flow_source[idx]]
        else:
            perm = rng.permutation(idx)
            train_flow[perm[: (perm.size + 1) // 2]] = True
    return train_flow[inverse.ravel()]


def corrupt(packets: Packets, share: float, seed: int) -> Packets:
    """Flip ``share`` of the present bits (share 0.5 = random bits); source becomes the generator name."""
    rng = np.random.default_rng(seed)
    out = packets.take(np.arange(len(packets)))
    present = out.nprint != -1
    if share >= 0.5:
        out.nprint[present] = rng.integers(0, 2, int(present.sum()), dtype=np.int8)
    else:
        flip = present & (rng.random(out.nprint.shape, dtype=np.float32) < share)
        out.nprint[flip] = 1 - out.nprint[flip]
    out.flow_id = np.array([f"g-{f}" for f in out.flow_id], dtype=object)
    out.source = np.full(len(out), "stand-in-generator", dtype=object)
    out.frame = np.zeros(len(out), dtype=np.int64)
    return out


def prepare(root: Path) -> dict[str, Path]:
    from netdiffusion.encode import encode_paths

    encoded = root / "encoded"
    encode_paths([SHARED / "pcaps"], encoded, manifest=SHARED / "manifest.csv",
                 flow_labels=SHARED / "ndpi_flow_labels.csv", packets=1024, progress=False)
    layout = read_layout(encoded)
    packets = read_packets(encoded)
    mask = split_train_real(packets)
    paths = {}
    for name, part in (("train", packets.take(mask)), ("real", packets.take(~mask)),
                       ("noisy-copy", corrupt(packets.take(mask), 0.02, 1)),
                       ("random", corrupt(packets.take(mask), 0.5, 2))):
        write_shard(part, root / name / "part-00000.parquet")
        write_fields(root / name, layout)
        paths[name] = root / name
    return paths


def main() -> dict:
    from netdiffusion.evaluate import evaluate

    quick = os.environ.get("NETDIFFUSION_EVAL_QUICK") == "1"
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        paths = prepare(root)
        results: dict = {"quick": quick}
        for generator in ("noisy-copy", "random"):
            started = time.perf_counter()
            r = evaluate(paths["real"], paths[generator], paths["train"], root / f"out-{generator}", quick=quick)
            sim = r["similarity"]
            results[generator] = {
                "seconds": round(time.perf_counter() - started, 2),
                "flows": r["meta"]["flows"],
                "jsd_tvd_hd": [sim["overall"][m] for m in ("jsd", "tvd", "hd")],
                "floor_jsd_tvd_hd": [sim["floor"][m] for m in ("jsd", "tvd", "hd")],
                "random_jsd_tvd_hd": [sim["random_baseline"][m] for m in ("jsd", "tvd", "hd")],
                "protocol_jsd": sim["overall"]["protocol"]["jsd"],
                "floor_protocol_jsd": sim["floor"]["protocol"]["jsd"],
                "per_bit_jsd": sim["overall"]["bits"]["jsd"],
                "floor_per_bit_jsd": sim["floor"]["bits"]["jsd"],
                "flow_stats_mean_tvd": r["flow_stats"]["mean_tvd"],
                "floor_flow_stats_mean_tvd": r["flow_stats"]["floor_mean_tvd"],
                "accuracy": {s: {t: {m: v["accuracy"] for m, v in ms.items()} for t, ms in ts.items()}
                             for s, ts in r["utility"].items()},
                "chance": r["random_baseline"]["chance_accuracy"],
                "memorisation": {k: r["memorisation"].get(k) for k in
                                 ("synthetic_sequence_in_train", "real_sequence_in_train",
                                  "synthetic_tuple_in_train", "real_tuple_in_train")},
                "notes": r["notes"],
            }
            keep = os.environ.get("NETDIFFUSION_EVAL_KEEP")
            if keep:
                import shutil

                shutil.copytree(root / f"out-{generator}", Path(keep) / generator, dirs_exist_ok=True)
    return results


if __name__ == "__main__":
    import json
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(json.dumps(main(), indent=2))
