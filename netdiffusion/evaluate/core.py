"""``evaluate(real, synthetic, train, output)``: every number of the evaluation in one report.

Order of work: load the three datasets, cut every flow to its first K packets (generated flows are
K long, so longer real flows would otherwise dominate the packet distributions), then
similarity (synthetic vs held-out real, next to the real-vs-real floor and a random-bits
baseline), flow statistics, ML utility, variation and memorisation, and finally the report files.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from netdiffusion.dataset import write_json
from netdiffusion.evaluate import flowstats, privacy, similarity, utility
from netdiffusion.evaluate.data import FlowSet, load
from netdiffusion.evaluate.metrics import METRICS
from netdiffusion.evaluate.report import PAPER, write_markdown
from netdiffusion.fields import ABSENT, Layout

log = logging.getLogger(__name__)

DEFAULT_PACKETS_K = 1024  # the paper's flow length: one generated image holds 1,024 packets
# flows per class and dataset evaluated at most (a random sample beyond): memory and classifier
# time grow with flows (SVM quadratically), the per-field distributions hardly change past this
DEFAULT_MAX_FLOWS_PER_CLASS = 2000
RANDOM_BASELINE_METHOD = (
    "real flows with every present bit replaced by a fair coin flip: header presence (the -1 "
    "pattern) is kept, so the baseline measures random header values, not missing headers"
)


def randomize_bits(fs: FlowSet, seed: int) -> FlowSet:
    """The random-bits baseline: same flows and header stacks, uniformly random 0/1 values."""
    rng = np.random.default_rng(seed)
    packets = fs.packets.take(np.arange(fs.n_packets))
    present = packets.nprint != ABSENT
    packets.nprint[present] = rng.integers(0, 2, int(present.sum()), dtype=np.int8)
    packets.source = np.full(len(packets), "random-bits", dtype=object)
    return FlowSet.from_packets(packets)


def split_halves(fs: FlowSet, seed: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Boolean mask of half A for the real-vs-real floor, split by capture file where possible.

    Per class, capture files (``source``) are assigned greedily to the smaller half; a class with
    a single capture file is split by flow instead (random, seeded) and listed as such."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(fs), dtype=bool)
    method: dict[str, list[str]] = {"by_source": [], "by_flow": []}
    for cls in np.unique(fs.label):
        idx = np.flatnonzero(fs.label == cls)
        sources, counts = np.unique(fs.source[idx], return_counts=True)
        if sources.size >= 2:
            size_a = size_b = 0
            for s in sources[np.argsort(-counts, kind="stable")]:
                members = idx[fs.source[idx] == s]
                if size_a <= size_b:
                    mask[members] = True
                    size_a += members.size
                else:
                    size_b += members.size
            method["by_source"].append(str(cls))
        else:
            perm = rng.permutation(idx)
            mask[perm[: perm.size // 2]] = True
            method["by_flow"].append(str(cls))
    return mask, method


def classes_left_out(real: set[str], synthetic: set[str]) -> dict[str, str]:
    """Classes on one side only, with why: they cannot be compared, so they stay out of every
    real-vs-synthetic number (overall and per class)."""
    out = {str(c): "no held-out real flows, only synthetic ones" for c in synthetic - real}
    out |= {str(c): "no synthetic flows, only held-out real ones" for c in real - synthetic}
    return dict(sorted(out.items()))


def only_classes(fs: FlowSet, classes: Sequence[str]) -> FlowSet:
    """The flows of ``classes``; ``fs`` itself when it has no other (no copy of a large matrix)."""
    keep = np.isin(fs.label, list(classes))
    return fs if keep.all() else fs.subset(keep)


def _nan_to_none(obj):
    """JSON has no NaN: report missing numbers as null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.floating | np.integer):
        return _nan_to_none(obj.item())
    return obj


def _load_all(real: Path, synthetic: Path, train: Path, classes: Sequence[str] | None,
              max_flows_per_class: int | None = None, seed: int = 0,
              sampled: dict[str, dict] | None = None) -> tuple[FlowSet, FlowSet, FlowSet, Layout, list[str]]:
    sampled = {} if sampled is None else sampled
    cap = {"max_flows_per_class": max_flows_per_class, "seed": seed}
    real_fs, layout, skipped_real = load(real, classes, **cap, sampled=sampled.setdefault("real", {}))
    syn_fs, syn_layout, skipped_syn = load(synthetic, classes, **cap, sampled=sampled.setdefault("synthetic", {}))
    train_fs, train_layout, skipped_train = load(train, classes, **cap, sampled=sampled.setdefault("train", {}))
    for name in [n for n, v in sampled.items() if not v]:
        del sampled[name]
    for path, other in ((synthetic, syn_layout), (train, train_layout)):
        if other.columns != layout.columns:
            raise ValueError(f"{path}: nPrint layout {other.headers} differs from {real}'s {layout.headers}")
    mapping = {}
    for fs in (train_fs, real_fs):
        mapping.update({lbl: mac for lbl, mac in zip(fs.label, fs.macro, strict=True) if mac})
    for fs in (real_fs, syn_fs, train_fs):
        fs.with_macro_from(mapping)
    for name, fs, path in (("real", real_fs, real), ("synthetic", syn_fs, synthetic), ("train", train_fs, train)):
        if len(fs) == 0:
            raise ValueError(f"{path}: the {name} dataset has no flows" + (f" of classes {list(classes)}"
                                                                            if classes else ""))
    return real_fs, syn_fs, train_fs, layout, [*skipped_real, *skipped_syn, *skipped_train]


def evaluate(real: str | Path, synthetic: str | Path, train: str | Path, output: str | Path, *,
             packets_k: int = DEFAULT_PACKETS_K, classes: Sequence[str] | None = None,
             models: Sequence[str] = utility.MODELS, tasks: Sequence[str] = utility.TASKS, seed: int = 0,
             quick: bool = False, max_features: int = 4096, plots: bool = True,
             max_flows_per_class: int | None = DEFAULT_MAX_FLOWS_PER_CLASS,
             synthetic_sources: Sequence[str] | None = None) -> dict:
    """Compare synthetic flows with held-out real ones; write ``report.json``, ``report.md``, PNGs.

    ``real`` is held-out real data, ``train`` the real data the model was trained on. ``quick``
    trims the expensive parts (K <= 64, 3 mixing rates, fewer flows for variation) for smoke runs.
    ``max_flows_per_class``: a class with more flows in a dataset is evaluated on a random sample of
    that many (``None`` or 0: every flow); the report's ``meta.sampled_flows`` and notes say which.
    ``synthetic_sources``: the datasets ``synthetic`` was assembled from, named in the report instead
    of ``synthetic`` (the pipeline links its per-class outputs into a scratch folder that is gone
    once the report is read).
    Returns the report dict (also written to ``output/report.json``)."""
    started = time.time()
    output = Path(output)
    for name, path in (("real", real), ("synthetic", synthetic), ("train", train)):
        if not Path(path).exists():  # checked before the output folder is created
            raise FileNotFoundError(f"{path}: no such dataset (--{name})")
    models = [m.strip() for m in models if m.strip()]
    for m in models:
        utility.make_model(m, seed)  # fail fast on an unknown model name
    tasks = [t.strip() for t in tasks if t.strip()]
    unknown_tasks = [t for t in tasks if t not in utility.TASKS]
    if unknown_tasks:
        raise ValueError(f"unknown task(s) {unknown_tasks}; choose from {list(utility.TASKS)}")
    if packets_k < 1:
        raise ValueError(f"packets_k must be at least 1, got {packets_k}")
    k = min(packets_k, 64) if quick else packets_k
    notes: list[str] = []

    if max_flows_per_class is not None and max_flows_per_class < 0:
        raise ValueError(f"max_flows_per_class must be 0 (every flow) or more, got {max_flows_per_class}")
    sampled: dict[str, dict] = {}
    real_fs, syn_fs, train_fs, layout, skipped = _load_all(Path(real), Path(synthetic), Path(train), classes,
                                                           max_flows_per_class, seed, sampled)
    output.mkdir(parents=True, exist_ok=True)  # only once the inputs have been read
    for name, by_class in sampled.items():
        notes.append(f"{name}: {len(by_class)} class(es) over {max_flows_per_class} flows evaluated on a random "
                     "sample of that many: " + ", ".join(f"{c} ({v['flows']} flows)" for c, v in by_class.items()))
    if skipped:
        notes.append(f"{len(skipped)} unreadable shard(s) skipped: " + ", ".join(skipped))
    real_k, syn_k, train_k = real_fs.first_k(k), syn_fs.first_k(k), train_fs.first_k(k)
    labels_real, labels_syn, labels_train = (set(np.unique(f.label)) for f in (real_k, syn_k, train_k))
    # real vs synthetic is compared only over classes both sides have: packets of other classes
    # would make the overall numbers a distance between different kinds of traffic
    sim_classes = sorted(labels_real & labels_syn)
    left_out = classes_left_out(labels_real, labels_syn)
    for cls, reason in left_out.items():
        notes.append(f"class {cls} left out of the real-vs-synthetic comparison: {reason}")
    if not sim_classes:
        notes.append("no class has both held-out real and synthetic flows: similarity and flow statistics "
                     "are null (nothing to compare)")
        log.warning("no class has both held-out real and synthetic flows (real: %s; synthetic: %s)",
                    ", ".join(sorted(map(str, labels_real))), ", ".join(sorted(map(str, labels_syn))))
    real_cmp, syn_cmp = only_classes(real_k, sim_classes), only_classes(syn_k, sim_classes)

    # -- statistical similarity, floor, random baseline -----------------------------------------
    # every reference covers the compared classes only, so it stays comparable with the synthetic score
    t0 = time.time()
    sim = similarity.compare(real_cmp, syn_cmp, layout, sim_classes)
    half_a, split_method = split_halves(real_cmp, seed)
    floor_a, floor_b = real_cmp.subset(half_a), real_cmp.subset(~half_a)
    floor = similarity.compare(floor_a, floor_b, layout, sorted(set(floor_a.label) & set(floor_b.label)))
    random_fs = randomize_bits(real_cmp, seed)
    rand = similarity.compare(real_cmp, random_fs, layout, sim_classes)
    # a second real-vs-real reference at the synthetic comparison's sample size (when the generator
    # made about as many flows as it was trained on): per-field JSD of high-cardinality fields
    # (sequence numbers, checksums, IP ids) grows as samples shrink, so the halves floor sits higher
    train_classes = sorted(set(sim_classes) & labels_train)
    train_ref = similarity.compare(only_classes(real_cmp, train_classes), only_classes(train_k, train_classes),
                                   layout, train_classes)
    if set(train_classes) != set(sim_classes):
        notes.append("train_vs_real covers only the compared classes with training flows: "
                     + (", ".join(train_classes) or "none"))
    if split_method["by_flow"]:
        notes.append("floor: classes with one capture file in the held-out real data were split by flow instead of by file: "
                     + ", ".join(split_method["by_flow"]))
    per_field = {}
    for key in [*sim["observed_fields"], similarity.PROTOCOL_FIELD]:
        row = {m: sim["per_field"][key][m] for m in METRICS}
        row |= {f"floor_{m}": floor["per_field"][key][m] for m in METRICS}
        row |= {f"random_{m}": rand["per_field"][key][m] for m in METRICS}
        per_field[key] = row
    per_class = {}
    for cls, row in sim["per_class"].items():
        # a class with one flow cannot be split into halves: its floor is null, not missing
        floor_row = floor["per_class"].get(cls, {})
        per_class[cls] = dict(row) | {f"floor_{m}": floor_row.get(m, float("nan")) for m in METRICS}
        per_class[cls] |= {f"random_{m}": rand["per_class"][cls][m] for m in METRICS}
    similarity_report = {
        "overall": sim["overall"],
        "floor": floor["overall"],
        "random_baseline": rand["overall"],
        "train_vs_real": train_ref["overall"],
        "per_field": per_field,
        "per_class": per_class,
        "floor_split": split_method,
        "classes": sim_classes,
        "classes_left_out": left_out,
        "packets_per_flow": k,
    }
    log.info("similarity: JSD %.4f (floor %.4f, random %.4f) in %.1fs", sim["overall"]["jsd"],
             floor["overall"]["jsd"], rand["overall"]["jsd"], time.time() - t0)

    # -- flow statistics ------------------------------------------------------------------------
    stats_real = flowstats.collect(real_cmp, layout, sim_classes)
    stats_syn = flowstats.collect(syn_cmp, layout, sim_classes)
    flow_stats = flowstats.compare(stats_real, stats_syn, sim_classes)
    stats_floor = flowstats.compare(flowstats.collect(floor_a, layout, sim_classes),
                                    flowstats.collect(floor_b, layout, sim_classes), sim_classes)
    stats_random = flowstats.compare(stats_real, flowstats.collect(random_fs, layout, sim_classes), sim_classes)
    flow_stats["floor_tvd"] = stats_floor["tvd"]
    flow_stats["random_tvd"] = stats_random["tvd"]
    flow_stats["floor_mean_tvd"] = stats_floor["mean_tvd"]
    flow_stats["random_mean_tvd"] = stats_random["mean_tvd"]
    flow_stats["tcp_flags_per_1024"] = {"real": flowstats.flag_counts_per_1024(stats_real),
                                        "synthetic": flowstats.flag_counts_per_1024(stats_syn)}

    # -- ML utility -----------------------------------------------------------------------------
    t0 = time.time()
    util_classes = sorted(labels_real & labels_syn & labels_train)
    u_train, u_test, u_syn = (only_classes(f, util_classes) for f in (train_k, real_k, syn_k))
    # null numbers, the same keys as a real run, for whatever cannot be classified
    utility_report: dict = {s: {t: {m: {"accuracy": float("nan")} for m in models} for t in tasks}
                            for s in utility.SCENARIOS}
    random_utility: dict = {t: {m: {"accuracy": float("nan")} for m in models} for t in tasks}
    chance: dict = {t: float("nan") for t in tasks}
    mixing_report: dict = {}
    balancing_report: dict = {}
    memo_x = None
    if util_classes:  # the feature space also serves memorisation, which needs no second class
        space = utility.build_space(u_train, k, max_features)
        memo_x = (utility.features(train_k, space), utility.features(real_k, space), utility.features(syn_k, space))
    if len(util_classes) < utility.MIN_CLASSES:
        which = f"only class {util_classes[0]} has" if util_classes else "no class has"
        notes.append(f"utility skipped: {which} flows in all of train, held-out real and synthetic; "
                     f"classification needs at least {utility.MIN_CLASSES} classes")
    else:
        l_train, l_test, l_syn = (utility.labelled(f, space) for f in (u_train, u_test, u_syn))
        for task in tasks:
            task_classes = np.unique(l_train.y(task))
            if task_classes.size < utility.MIN_CLASSES:
                notes.append(f"utility {task} task skipped: the training flows have one {task} class "
                             f"({', '.join(map(str, task_classes))}); classification needs at least "
                             f"{utility.MIN_CLASSES} classes")
        utility_report = utility.scenarios(l_train, l_test, l_syn, models, list(tasks), seed)
        rates = (0.0, 0.5, 1.0) if quick else utility.MIXING_RATES
        mix_models = models[:1] if quick else models
        mixing_report = utility.mixing(l_train, l_test, l_syn, mix_models, list(tasks), seed, rates)
        balancing_report = utility.balancing(l_train, l_test, l_syn, mix_models, seed)
        l_random = utility.labelled(randomize_bits(u_train, seed + 1), space)
        random_utility = {
            task: {m: {"accuracy": utility.fit_score(m, l_random.x, l_random.y(task), l_test.x,
                                                     l_test.y(task), seed)["accuracy"]} for m in models}
            for task in tasks
        }
        chance = {task: utility.chance(l_train, l_test, task) for task in tasks}
        small = [c for c in util_classes if (u_train.label == c).sum() < 2 or (u_test.label == c).sum() < 2]
        if small:
            notes.append("classes with fewer than 2 flows in train or test (accuracy is noisy): " + ", ".join(small))
        if space.size < k * layout.width:
            notes.append(f"ML features: {space.size} highest-variance (packet, bit) cells of {k} x "
                         f"{layout.width} (the rest are constant or cut by max_features={max_features})")
    log.info("utility in %.1fs", time.time() - t0)

    # -- variation and memorisation -------------------------------------------------------------
    variation = privacy.variation(syn_k, real_k, layout, sim_classes, k=min(k, 32),
                                  max_flows=20 if quick else 40, seed=seed)
    if memo_x is not None:
        memorisation = privacy.memorisation(train_k, real_k, syn_k, layout, k, *memo_x, seed=seed)
    else:
        memorisation = {}

    report = {
        "similarity": similarity_report,
        "utility": utility_report,
        "random_baseline": {
            "method": RANDOM_BASELINE_METHOD,
            "similarity": {m: rand["overall"][m] for m in METRICS},
            "utility": random_utility,
            "chance_accuracy": chance,
            "flow_stats_mean_tvd": stats_random["mean_tvd"],
        },
        "flow_stats": flow_stats,
        "mixing": mixing_report,
        "class_balancing": balancing_report,
        "variation": variation,
        "memorisation": memorisation,
        "meta": {
            "real": str(real), "train": str(train),
            "synthetic": ", ".join(map(str, synthetic_sources)) if synthetic_sources else str(synthetic),
            "flows": {"real": len(real_fs), "synthetic": len(syn_fs), "train": len(train_fs)},
            "packets": {"real": real_k.n_packets, "synthetic": syn_k.n_packets, "train": train_k.n_packets},
            "packets_k": k, "models": list(models), "tasks": list(tasks), "seed": seed, "quick": quick,
            "utility_classes": util_classes, "max_features": max_features, "skipped_shards": len(skipped),
            "max_flows_per_class": max_flows_per_class or None, "sampled_flows": sampled,
        },
        "paper": PAPER,
        "notes": notes,
    }
    details = {"real_vs_synthetic": {"per_field_class": sim["per_field_class"], "per_bit": sim["per_bit"],
                                      "columns": layout.columns},
               "floor": {"per_field_class": floor["per_field_class"]}}
    if plots:
        from netdiffusion.evaluate import plots as plotting

        report["figures"] = plotting.write_all(output, report, real_cmp, syn_cmp, layout, stats_real, stats_syn)
    report["meta"]["seconds"] = round(time.time() - started, 2)
    report = _nan_to_none(report)
    write_json(output / "details.json", _nan_to_none(details))
    write_json(output / "report.json", report)
    write_markdown(output / "report.md", report)
    log.info("evaluation written to %s in %.1fs", output, time.time() - started)
    return report
