"""Edge cases of ``netdiffusion evaluate`` found on unseen data: class sets that do not match.

Real traffic (the ``small_dataset`` captures: instagram, netflix, reddit, whatsapp, zoom) is split
flow by flow into a training half and a held-out half; each test writes the class subsets it needs.
A "synthetic" set that is a copy of held-out real flows makes the expected numbers exact (0).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import Packets, read_layout, read_packets, write_fields, write_shard
from netdiffusion.evaluate.metrics import METRICS


@pytest.fixture(scope="module")
def halves(small_dataset: Path) -> dict:
    """Training and held-out halves of the real captures (alternate flows of each class)."""
    packets = read_packets(small_dataset)
    ids, first, inverse = np.unique(packets.flow_id, return_index=True, return_inverse=True)
    labels = packets.label[first].astype(str)
    train_flow = np.zeros(ids.size, dtype=bool)
    for label in np.unique(labels):
        train_flow[np.flatnonzero(labels == label)[::2]] = True
    in_train = train_flow[inverse.ravel()]
    return {"train": packets.take(in_train), "real": packets.take(~in_train), "layout": read_layout(small_dataset)}


def write_classes(halves: dict, half: str, classes: Iterable[str], path: Path,
                  max_flows: dict[str, int] | None = None) -> Path:
    """One half's flows of ``classes`` as a dataset (``max_flows``: at most that many for a class)."""
    packets: Packets = halves[half]
    labels = packets.label.astype(str)
    keep = np.isin(labels, list(classes))
    for cls, limit in (max_flows or {}).items():
        kept_flows = np.unique(packets.flow_id[labels == cls])[:limit]
        keep &= (labels != cls) | np.isin(packets.flow_id, kept_flows)
    write_shard(packets.take(keep), path / "part-0.parquet")
    write_fields(path, halves["layout"])
    return path


def run(real: Path, synthetic: Path, train: Path, out: Path) -> dict:
    from netdiffusion.evaluate import evaluate

    return evaluate(real, synthetic, train, out, packets_k=64, models=["dt"], seed=0, quick=True, plots=False)


def all_accuracies(report: dict) -> list:
    """Every accuracy of the utility section, the random-bits baseline, chance and mixing."""
    values = [report["utility"][s][t][m]["accuracy"] for s in report["utility"] for t in report["utility"][s]
              for m in report["utility"][s][t]]
    base = report["random_baseline"]
    values += [v["accuracy"] for models in base["utility"].values() for v in models.values()]
    values += list(base["chance_accuracy"].values())
    values += [acc for task, models in report["mixing"].items() if isinstance(models, dict)
               for curve in models.values() for acc in curve.values()]
    return values


def test_overall_similarity_only_over_shared_classes(halves, tmp_path):
    """Real zoom/reddit/whatsapp, synthetic = an exact copy of real zoom/reddit plus netflix flows:
    over the shared classes the copy is perfect, so every overall distance must be 0; netflix (no
    held-out real flows) and whatsapp (no synthetic flows) are left out and named with a reason."""
    real = write_classes(halves, "real", ["zoom", "reddit", "whatsapp"], tmp_path / "real")
    syn = write_classes(halves, "real", ["zoom", "reddit", "netflix"], tmp_path / "syn")
    train = write_classes(halves, "train", ["zoom", "reddit", "whatsapp", "netflix"], tmp_path / "train")
    r = run(real, syn, train, tmp_path / "out")
    sim = r["similarity"]
    for m in METRICS:
        assert sim["overall"][m] == pytest.approx(0.0, abs=1e-12), m
        assert sim["overall"]["bits"][m] == pytest.approx(0.0, abs=1e-12), m
        assert sim["overall"]["protocol"][m] == pytest.approx(0.0, abs=1e-12), m
    assert r["flow_stats"]["mean_tvd"] == pytest.approx(0.0, abs=1e-12)
    assert sim["classes"] == ["reddit", "zoom"]
    assert set(sim["classes_left_out"]) == {"netflix", "whatsapp"}
    assert "no held-out real flows" in sim["classes_left_out"]["netflix"]
    assert "no synthetic flows" in sim["classes_left_out"]["whatsapp"]
    # the references cover the same classes as the comparison: floor and random baseline too
    packets_compared = sim["overall"]["packets"][0]
    assert sim["random_baseline"]["packets"] == [packets_compared, packets_compared]
    assert sum(sim["floor"]["packets"]) == packets_compared
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["similarity"]["classes_left_out"] == sim["classes_left_out"]
    assert "whatsapp" in (tmp_path / "out" / "report.md").read_text()


def test_no_shared_class_gives_null_similarity(halves, tmp_path):
    """No class in both real and synthetic: nothing to compare, so no number (null) and a note,
    as utility already does when no class is shared, never a distance between different classes."""
    real = write_classes(halves, "real", ["zoom", "reddit", "whatsapp"], tmp_path / "real")
    syn = write_classes(halves, "real", ["netflix", "instagram"], tmp_path / "syn")
    train = write_classes(halves, "train", ["zoom", "reddit", "whatsapp"], tmp_path / "train")
    r = run(real, syn, train, tmp_path / "out")
    sim = r["similarity"]
    for key in ("overall", "floor", "random_baseline", "train_vs_real"):
        for m in METRICS:
            assert sim[key][m] is None, (key, m)
            assert sim[key]["protocol"][m] is None, (key, m)
            assert sim[key]["bits"][m] is None, (key, m)
    assert r["random_baseline"]["similarity"]["jsd"] is None
    assert r["flow_stats"]["mean_tvd"] is None
    assert sim["classes"] == [] and sim["per_class"] == {}
    assert set(sim["classes_left_out"]) == {"zoom", "reddit", "whatsapp", "netflix", "instagram"}
    assert any("no class has both held-out real and synthetic flows" in n for n in r["notes"])
    assert all(v is None for v in all_accuracies(r))


def test_one_class_gives_null_utility(halves, tmp_path):
    """A single class everywhere: every classifier trivially scores 1.0, so utility must be null
    with a note (classification needs 2 classes), without sklearn's single-label warnings."""
    real = write_classes(halves, "real", ["zoom"], tmp_path / "real")
    train = write_classes(halves, "train", ["zoom"], tmp_path / "train")
    syn = write_classes(halves, "train", ["zoom"], tmp_path / "syn")  # a copy of the training flows
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run(real, syn, train, tmp_path / "out")
    assert not [w for w in caught if "single label" in str(w.message)]
    accuracies = all_accuracies(r)
    assert accuracies and all(v is None for v in accuracies)
    assert any("at least 2 classes" in n for n in r["notes"])
    assert r["similarity"]["overall"]["jsd"] is not None  # similarity needs no second class
    assert r["memorisation"]["synthetic_sequence_in_train"] == 1.0  # and memorisation still runs


def test_one_macro_class_gives_null_macro_utility(halves, tmp_path):
    """zoom and whatsapp are both "conferencing": the micro task works, the macro task has one
    class, so its accuracies are null (not a trivial 1.0) and a note says why."""
    classes = ["zoom", "whatsapp"]
    real = write_classes(halves, "real", classes, tmp_path / "real")
    train = write_classes(halves, "train", classes, tmp_path / "train")
    syn = write_classes(halves, "real", classes, tmp_path / "syn")
    r = run(real, syn, train, tmp_path / "out")
    for scenario in r["utility"].values():
        assert 0.0 <= scenario["micro"]["dt"]["accuracy"] <= 1.0
        assert scenario["macro"]["dt"]["accuracy"] is None
    assert r["random_baseline"]["chance_accuracy"]["macro"] is None
    assert r["random_baseline"]["utility"]["macro"]["dt"]["accuracy"] is None
    assert all(v is None for v in r["mixing"]["macro"]["dt"].values())
    assert any("macro" in n and "at least 2 classes" in n for n in r["notes"])


def test_fit_score_needs_two_training_classes():
    from netdiffusion.evaluate.utility import fit_score

    x = np.arange(12, dtype=np.int8).reshape(6, 2) % 2
    y = np.full(6, "zoom")
    scores = fit_score("rf", x, y, x, y, seed=0)
    assert np.isnan(scores["accuracy"]) and np.isnan(scores["balanced_accuracy"]) and np.isnan(scores["macro_f1"])


def test_single_flow_class_has_null_floor_keys(halves, tmp_path):
    """A class with one held-out flow cannot be split into two halves: its floor is null, not missing."""
    classes = ["zoom", "reddit", "netflix"]
    real = write_classes(halves, "real", classes, tmp_path / "real", max_flows={"netflix": 1})
    syn = write_classes(halves, "real", classes, tmp_path / "syn")
    train = write_classes(halves, "train", ["zoom", "reddit", "netflix"], tmp_path / "train")
    r = run(real, syn, train, tmp_path / "out")
    row = r["similarity"]["per_class"]["netflix"]
    for m in METRICS:
        assert f"floor_{m}" in row and row[f"floor_{m}"] is None, m
        assert row[m] is not None
    assert r["similarity"]["per_class"]["zoom"]["floor_jsd"] is not None


def test_no_category_at_all_is_nan_not_zero():
    """Both sides empty (no class compared): no data, so NaN, never a perfect 0."""
    from netdiffusion.evaluate.metrics import distances

    for value in distances(np.zeros(0), np.zeros(0)).values():
        assert np.isnan(value)


def test_missing_inputs_name_the_dataset_and_create_nothing(tmp_path: Path) -> None:
    """QA: a missing --synthetic said '.../fields.json: not an encoded dataset', and the output
    folder was created before the inputs were checked."""
    from netdiffusion.evaluate import evaluate

    (tmp_path / "exists").mkdir()
    for missing in ("real", "synthetic", "train"):
        paths = {k: tmp_path / "nowhere" if k == missing else tmp_path / "exists" for k in ("real", "synthetic", "train")}
        with pytest.raises(FileNotFoundError, match=f"nowhere: no such dataset \\(--{missing}\\)"):
            evaluate(paths["real"], paths["synthetic"], paths["train"], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not an encoded dataset"):  # exists, but no fields.json
        evaluate(tmp_path / "exists", tmp_path / "exists", tmp_path / "exists", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_flow_image_of_a_label_that_is_not_file_safe_stays_in_images(halves, tmp_path):
    """A class label with a space or a slash gets its flow image under ``images/`` with the file-safe
    name every other stage uses (``names.file_name``), and report.md links it with a link Markdown
    can follow (QA: manifest label ``game traffic`` gave ``![..](images/game traffic.png)``, a broken
    link; ``web/video`` would have been written to ``images/web/video.png`` and failed)."""
    from netdiffusion.evaluate import evaluate
    from netdiffusion.names import file_name

    odd = "web/video clips"
    sets = {}
    for half, name in (("real", "real"), ("real", "synthetic"), ("train", "train")):
        path = write_classes(halves, half, ["zoom", "netflix"], tmp_path / name)
        packets = read_packets(path)
        packets.label = np.where(packets.label.astype(str) == "zoom", odd, packets.label).astype(object)
        write_shard(packets, path / "part-0.parquet")
        sets[name] = path
    r = evaluate(sets["real"], sets["synthetic"], sets["train"], tmp_path / "out", packets_k=16, models=["dt"],
                 seed=0, quick=True, plots=True)
    figure = r["figures"][f"images_{odd}"]
    assert figure == f"images/{file_name(odd)}.png" and (tmp_path / "out" / figure).stat().st_size > 1000
    assert f"]({figure})" in (tmp_path / "out" / "report.md").read_text()


def _empty_tables(markdown: str) -> list[str]:
    """Header lines of Markdown tables with no data row, or whose data rows hold nothing but dashes."""
    lines = markdown.splitlines()
    empty = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")[1:]])
            if not rows or all(all(c in ("—", "") for c in r) for r in rows):
                empty.append(line)
    return empty


def test_report_md_has_no_empty_tables_when_nothing_is_compared(halves, tmp_path):
    """Regression (QA, nDPI captures): with no class shared by held-out real and synthetic data the
    report's 'Per class' table had a header and no row, 'Fields furthest from real' listed a
    'protocol' row of dashes, and a UDP-only comparison (quic) printed a TCP-flags table of dashes.
    A section with nothing to show now says so in one line."""
    real = write_classes(halves, "real", ["zoom", "reddit"], tmp_path / "real")
    syn = write_classes(halves, "real", ["netflix"], tmp_path / "syn")
    train = write_classes(halves, "train", ["zoom", "reddit"], tmp_path / "train")
    run(real, syn, train, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    empty = [t for t in _empty_tables(text) if not t.startswith("|  | avg JSD")]  # paper row: kept on purpose
    utility = {"| scenario | rf | dt | svm | paper (NetDiffusion TSTR) |", "| scenario | dt | paper (NetDiffusion TSTR) |"}
    assert [t for t in empty if t not in utility] == [], text
    assert "no class has both held-out real and synthetic flows" in text.split("### Per class")[1].split("###")[0]
    assert "### TCP flags" not in text
    # UDP-only classes compared: no TCP-flags table of dashes, the other tables filled
    real = write_classes(halves, "real", ["zoom"], tmp_path / "real_udp", max_flows={"zoom": 4})
    udp = read_packets(real)
    udp_only = udp.take(halves["layout"].header_present(udp.nprint, "udp"))
    assert len(udp_only)
    write_shard(udp_only, real / "part-0.parquet")
    run(real, real, train, tmp_path / "out_udp")
    text = (tmp_path / "out_udp" / "report.md").read_text()
    assert "### TCP flags" not in text and "| zoom |" in text, text


def test_classes_over_max_flows_per_class_are_evaluated_on_a_sample(halves, small_dataset: Path,
                                                                     tmp_path: Path) -> None:
    """A class with more flows than ``max_flows_per_class`` keeps a random sample of whole flows
    (the same for the same seed), read shard by shard; the report says which classes and from how many."""
    from netdiffusion.evaluate import evaluate
    from netdiffusion.evaluate.data import load

    classes = ["zoom", "whatsapp", "reddit"]
    real = write_classes(halves, "real", classes, tmp_path / "real")
    train = write_classes(halves, "train", classes, tmp_path / "train")
    full, _, _ = load(real)
    per_class = {c: int((full.label == c).sum()) for c in classes}
    cap = min(per_class.values()) + 2  # at least one class over it, and at least one not
    over = {c for c, n in per_class.items() if n > cap}
    assert over and len(over) < len(classes), per_class
    sampled: dict = {}
    fs, _, _ = load(real, max_flows_per_class=cap, seed=3, sampled=sampled)
    assert sampled == {c: {"flows": per_class[c], "kept": cap} for c in over}
    for c in classes:
        assert int((fs.label == c).sum()) == min(cap, per_class[c])
    again, _, _ = load(real, max_flows_per_class=cap, seed=3)
    assert again.flow_id.tolist() == fs.flow_id.tolist()
    other, _, _ = load(real, max_flows_per_class=cap, seed=4)
    assert other.flow_id.tolist() != fs.flow_id.tolist()
    kept = fs.packets  # every kept flow whole: the same rows as in the full read
    for fid in fs.flow_id.tolist()[:20]:
        a, b = kept.take(kept.flow_id == fid), full.packets.take(full.packets.flow_id == fid)
        assert np.array_equal(a.nprint, b.nprint) and a.packet_index.tolist() == b.packet_index.tolist()
    report = evaluate(real, real, train, tmp_path / "out", packets_k=64, models=["dt"], seed=0, quick=True,
                      plots=False, max_flows_per_class=cap)
    assert set(report["meta"]["sampled_flows"]["real"]) == over
    assert report["meta"]["flows"]["real"] == sum(min(cap, n) for n in per_class.values())
    assert any(n.startswith("real: ") and "random sample" in n for n in report["notes"])
    unlimited = evaluate(real, real, train, tmp_path / "all", packets_k=64, models=["dt"], seed=0, quick=True,
                         plots=False, max_flows_per_class=0)
    assert unlimited["meta"]["sampled_flows"] == {} and unlimited["meta"]["flows"]["real"] == len(full)


def test_the_report_names_the_synthetic_datasets_it_was_given_not_a_scratch_folder(halves, tmp_path):
    """The pipeline's evaluate step links its per-class synthetic outputs into a temporary folder:
    the report named that folder (``/tmp/evaluate-.../synthetic``, gone once anyone reads it).
    ``synthetic_sources`` names the datasets themselves."""
    from netdiffusion.evaluate import evaluate

    real = write_classes(halves, "real", ["zoom", "reddit"], tmp_path / "real")
    train = write_classes(halves, "train", ["zoom", "reddit"], tmp_path / "train")
    sources = [str(write_classes(halves, "real", [c], tmp_path / f"gen_{c}")) for c in ("zoom", "reddit")]
    from components.common import merge_datasets

    merged = merge_datasets(sources, tmp_path / "scratch" / "synthetic")
    report = evaluate(real, merged, train, tmp_path / "out", packets_k=64, models=["dt"], quick=True, plots=False,
                      synthetic_sources=sources)
    assert report["meta"]["synthetic"] == ", ".join(sources)
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"- synthetic: `{', '.join(sources)}`" in text and "scratch" not in text
