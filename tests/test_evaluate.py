"""End-to-end evaluation on tiny data: report structure and sane numbers.

Real/train data are built with the field table (valid IPv4/TCP headers, class-specific ports,
TTLs, windows and sizes, several capture files per class); "synthetic" variants are a perfect copy
of the held-out real data, a bit-flipped copy, and random bits, so the expected ordering of the
numbers is known without hard-coding them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from netdiffusion.dataset import Packets, write_fields, write_shard
from netdiffusion.fields import ABSENT, Layout

LAYOUT = Layout()
CLASSES = {  # label: (macro, service port, ttl, window, mean packet size)
    "netflix": ("streaming", 443, 57, 65535, 1400),
    "zoom": ("conferencing", 8801, 120, 1024, 300),
    "reddit": ("social", 80, 64, 29200, 700),
}


def build_packets(seed: int, flows_per_class: int | dict[str, int], sources: int, prefix: str) -> Packets:
    """Flows of every class, each 12-30 packets of IPv4/TCP with valid header checksums."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("flow_id", "label", "macro", "packet_index", "timestamp",
                                             "direction", "wire_length", "source", "frame")}
    values: dict[str, list] = {k: [] for k in ("dport", "sport", "ttl", "win", "size", "flags", "src", "dst")}
    for label, (macro, port, ttl, win, size) in CLASSES.items():
        count = flows_per_class[label] if isinstance(flows_per_class, dict) else flows_per_class
        for f in range(count):
            n = int(rng.integers(12, 31))
            cols["flow_id"] += [f"{prefix}-{label}-{f}"] * n
            cols["label"] += [label] * n
            cols["macro"] += [macro] * n
            cols["packet_index"] += list(range(n))
            cols["timestamp"] += list(np.cumsum(rng.exponential(2e6 if label == "zoom" else 2e7, n)).astype(np.int64))
            direction = rng.integers(0, 2, n)
            cols["direction"] += list(direction)
            sizes = np.clip(rng.normal(size, 80, n), 40, 1500).astype(int)
            cols["wire_length"] += list(sizes + 14)
            cols["source"] += [f"{label}_{f % sources}.pcap"] * n
            cols["frame"] += list(range(1, n + 1))
            flags = np.full(n, 0b000010000)  # ACK
            flags[0], flags[-1] = 0b000000010, 0b000010001  # SYN, FIN+ACK
            values["flags"] += list(flags)
            values["dport"] += [port] * n
            values["sport"] += [int(rng.integers(32768, 61000))] * n
            values["ttl"] += list(ttl - rng.integers(0, 3, n))
            values["win"] += list(np.where(rng.random(n) < 0.8, win, win // 2))
            values["size"] += list(sizes)
            values["src"] += [0x0A000000 + int(rng.integers(1, 250))] * n
            values["dst"] += [0xC0A80000 + 17 * list(CLASSES).index(label) + int(rng.integers(0, 3))] * n
    v = {k: np.asarray(x, dtype=np.int64) for k, x in values.items()}
    total = len(cols["flow_id"])
    m = LAYOUT.empty(total)
    ip = {"ver": 4, "hl": 5, "tos": 0, "tl": v["size"], "id": rng.integers(0, 65536, total), "rbit": 0,
          "dfbit": 1, "mfbit": 0, "foff": 0, "ttl": v["ttl"], "proto": 6, "cksum": 0, "src": v["src"],
          "dst": v["dst"]}
    for name, value in ip.items():
        LAYOUT.set_field(m, f"ipv4_{name}", np.broadcast_to(np.asarray(value), (total,)))
    tcp = {"sprt": v["sport"], "dprt": v["dport"], "seq": rng.integers(0, 2**32, total),
           "ackn": rng.integers(0, 2**32, total), "doff": 5, "res": 0, "wsize": v["win"], "cksum": 0, "urp": 0}
    for name, value in tcp.items():
        LAYOUT.set_field(m, f"tcp_{name}", np.broadcast_to(np.asarray(value), (total,)))
    for i, flag in enumerate(("ns", "cwr", "ece", "urg", "ackf", "psh", "rst", "syn", "fin")):
        LAYOUT.set_field(m, f"tcp_{flag}", (v["flags"] >> (8 - i)) & 1)
    # valid IPv4 header checksum: one's complement of the one's-complement sum of the header words
    data, _ = LAYOUT.header_bytes(m, "ipv4")
    words = (data[:, 0:20:2].astype(np.int64) << 8) | data[:, 1:20:2]
    s = words.sum(axis=1)
    while (s >> 16).any():
        s = (s & 0xFFFF) + (s >> 16)
    LAYOUT.set_field(m, "ipv4_cksum", 0xFFFF - s)
    arr = {k: np.asarray(x) for k, x in cols.items()}
    return Packets(flow_id=arr["flow_id"].astype(object), label=arr["label"].astype(object),
                   macro=arr["macro"].astype(object), packet_index=arr["packet_index"].astype(np.int32),
                   timestamp=arr["timestamp"].astype(np.int64), direction=arr["direction"].astype(np.int8),
                   wire_length=arr["wire_length"].astype(np.int32), source=arr["source"].astype(object),
                   frame=arr["frame"].astype(np.int64), nprint=m)


def write_dataset(packets: Packets, path: Path) -> Path:
    write_shard(packets, path / "part-00000.parquet")
    write_fields(path, LAYOUT)
    return path


def flip_bits(packets: Packets, share: float, seed: int) -> Packets:
    """A corrupted copy: ``share`` of the present bits flipped (a bad generator)."""
    rng = np.random.default_rng(seed)
    out = packets.take(np.arange(len(packets)))
    present = out.nprint != ABSENT
    flip = present & (rng.random(out.nprint.shape) < share)
    out.nprint[flip] = 1 - out.nprint[flip]
    out.source = np.full(len(out), "model-x", dtype=object)
    out.frame = np.zeros(len(out), dtype=np.int64)
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    train = build_packets(1, flows_per_class={"netflix": 24, "zoom": 6, "reddit": 24}, sources=2, prefix="t")
    real = build_packets(2, flows_per_class=16, sources=2, prefix="r")
    return {
        "train": write_dataset(train, root / "train"),
        "real": write_dataset(real, root / "real"),
        "copy": write_dataset(real, root / "copy"),
        "flipped": write_dataset(flip_bits(real, 0.08, 3), root / "flipped"),
        "root": root,
    }


@pytest.fixture(scope="module")
def flipped_report(datasets) -> dict:
    from netdiffusion.evaluate import evaluate

    return evaluate(datasets["real"], datasets["flipped"], datasets["train"], datasets["root"] / "out-flipped",
                    packets_k=32, seed=0)


def test_report_structure(flipped_report, datasets):
    r = flipped_report
    out = datasets["root"] / "out-flipped"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["similarity"]["overall"]["jsd"] == pytest.approx(r["similarity"]["overall"]["jsd"])
    for key in ("overall", "floor", "random_baseline"):
        for metric in ("jsd", "tvd", "hd"):
            assert 0.0 <= r["similarity"][key][metric] <= 1.0
    for scenario in ("train_real_test_real", "train_synthetic_test_real", "train_real_test_synthetic"):
        for task in ("micro", "macro"):
            for model in ("rf", "dt", "svm"):
                assert 0.0 <= r["utility"][scenario][task][model]["accuracy"] <= 1.0
    assert set(r["similarity"]["per_class"]) == set(CLASSES)
    # two capture files per class: the floor splits by file, not by flow
    assert sorted(r["similarity"]["floor_split"]["by_source"]) == sorted(CLASSES)
    assert r["similarity"]["floor_split"]["by_flow"] == []
    assert "tcp_flags" in r["flow_stats"]["tvd"] and "ipv4_checksum_error" in r["flow_stats"]["tvd"]
    assert set(r["mixing"]["micro"]["rf"]) == {"0.00", "0.25", "0.50", "0.75", "1.00"}
    assert r["random_baseline"]["utility"]["micro"]["rf"]["accuracy"] is not None
    assert r["variation"]["per_field"] and r["memorisation"]
    balancing = r["class_balancing"]
    assert balancing["minority_classes"] == ["zoom"] and balancing["synthetic_added"] == {"zoom": 16}
    assert balancing["rf"]["after"]["accuracy"] is not None
    md = (out / "report.md").read_text()
    assert "Table 3" in md and "0.04" in md and "0.738" in md
    for fig in ("field_jsd.png", "mixing.png", "tcp_flags.png", "packet_sizes.png", "images/zoom.png"):
        assert (out / fig).stat().st_size > 1000, fig


def test_numbers_are_sane(flipped_report):
    r = flipped_report
    sim = r["similarity"]
    # the floor (two halves of real data from the same process) is far below the random baseline,
    # and a bit-flipping generator lands in between
    assert sim["floor"]["jsd"] < sim["overall"]["jsd"] < sim["random_baseline"]["jsd"]
    assert sim["random_baseline"]["jsd"] > 0.3
    assert sim["per_field"]["ipv4_ver"]["jsd"] > sim["per_field"]["ipv4_ver"]["floor_jsd"]
    # classes are separable by port/TTL/window: real-trained classifiers are near perfect
    assert r["utility"]["train_real_test_real"]["micro"]["rf"]["accuracy"] > 0.9
    # valid checksums in real data; flipped bits break most of them in the synthetic copy
    assert r["flow_stats"]["real"]["ipv4_checksum_error"]["mean"] == 0.0
    assert r["flow_stats"]["synthetic"]["ipv4_checksum_error"]["mean"] > 0.5
    flags = r["flow_stats"]["tcp_flags_per_1024"]["real"]
    # one SYN per flow: 16 held-out flows x 3 classes, over all (TCP) packets compared
    assert flags["syn"] == pytest.approx(1024 * 48 / r["meta"]["packets"]["real"], rel=1e-6)
    # new flows: no synthetic header sequence equals a training flow
    assert r["memorisation"]["synthetic_sequence_in_train"] == 0.0


def test_perfect_copy_is_indistinguishable(datasets):
    """Synthetic == held-out real: every distance 0, TRTS equals TRTR, memorisation of real = 0."""
    from netdiffusion.evaluate import evaluate

    r = evaluate(datasets["real"], datasets["copy"], datasets["train"], datasets["root"] / "out-copy",
                 packets_k=32, models=["rf"], seed=0, quick=True, plots=False)
    for metric in ("jsd", "tvd", "hd"):
        assert r["similarity"]["overall"][metric] == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in r["flow_stats"]["tvd"].values() if v is not None)
    assert r["utility"]["train_real_test_synthetic"]["micro"]["rf"]["accuracy"] == pytest.approx(
        r["utility"]["train_real_test_real"]["micro"]["rf"]["accuracy"])
    assert r["variation"]["mean"]["synthetic"] == pytest.approx(r["variation"]["mean"]["real"])


def test_cli_reports_bad_input(tmp_path, capsys, datasets):
    from netdiffusion.cli import main

    rc = main(["evaluate", "--real", str(tmp_path / "missing"), "--synthetic", str(datasets["copy"]),
               "--train", str(datasets["train"]), "--output", str(tmp_path / "out"), "--quick"])
    assert rc == 2
    err = capsys.readouterr().err  # one line on stderr, like every other stage
    assert err.startswith("netdiffusion evaluate: error: ") and "missing" in err


def test_cli_subset_layout_classes_and_missing_macro(tmp_path, capsys):
    """An ipv4+tcp layout, --classes, generated data without macro labels (filled from the real
    data), and a broken shard that is skipped and reported."""
    from netdiffusion.cli import main

    small = Layout(["ipv4", "tcp"])
    cols = np.r_[np.arange(LAYOUT.header_slice("ipv4").start, LAYOUT.header_slice("ipv4").stop),
                 np.arange(LAYOUT.header_slice("tcp").start, LAYOUT.header_slice("tcp").stop)]
    paths = {}
    for name, packets in (("train", build_packets(4, 10, 2, "t")), ("real", build_packets(5, 8, 2, "r")),
                          ("syn", flip_bits(build_packets(6, 8, 1, "s"), 0.02, 1))):
        packets.nprint = np.ascontiguousarray(packets.nprint[:, cols])
        if name == "syn":
            packets.macro = np.full(len(packets), "", dtype=object)
        write_shard(packets, tmp_path / name / "part-0.parquet")
        write_fields(tmp_path / name, small)
        paths[name] = str(tmp_path / name)
    (tmp_path / "real" / "part-9-broken.parquet").write_bytes(b"not a parquet file")  # skipped, counted
    out = tmp_path / "out"
    rc = main(["evaluate", "--real", paths["real"], "--synthetic", paths["syn"], "--train", paths["train"],
               "--output", str(out), "--classes", "netflix,zoom", "--models", "rf", "--quick", "--no-plots"])
    assert rc == 0, capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["similarity"]["classes"] == ["netflix", "zoom"]
    assert report["meta"]["utility_classes"] == ["netflix", "zoom"]
    # macro labels of the generated flows were filled from the real data, so the macro task works
    assert report["utility"]["train_synthetic_test_real"]["macro"]["rf"]["accuracy"] > 0.9
    assert "ipv4_checksum_error" in report["flow_stats"]["tvd"]
    assert report["meta"]["skipped_shards"] == 1
    assert any("part-9-broken.parquet" in note for note in report["notes"])
    assert "TSTR" in (out / "report.md").read_text()


def _split_by_flow(dataset: Path, out: Path) -> dict[str, Path]:
    """Alternate flows of each class into two real datasets (the slice has one capture per class)."""
    from netdiffusion.dataset import read_layout, read_packets

    layout = read_layout(dataset)
    packets = read_packets(dataset)
    ids, inverse = np.unique(packets.flow_id, return_inverse=True)
    first = np.unique(inverse, return_index=True)[1]
    labels = packets.label[first]
    half_a = np.zeros(ids.size, dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        half_a[members[::2]] = True
    paths = {}
    for name, mask in (("train", half_a[inverse.ravel()]), ("real", ~half_a[inverse.ravel()])):
        write_shard(packets.take(mask), out / name / "part-0.parquet")
        write_fields(out / name, layout)
        paths[name] = out / name
    return paths


@pytest.mark.slow
def test_generated_flows_on_real_slice(small_dataset, tiny_model, tmp_path):
    """The real pipeline end to end: real captures (small_dataset), a tiny trained model's flows.

    The tiny model trains for a few steps, so its flows are poor: the report must say so (its
    distance sits above the real-vs-real floor) while every section is filled in."""
    from netdiffusion.evaluate import evaluate
    from netdiffusion.model.generate import generate

    paths = _split_by_flow(small_dataset, tmp_path)
    generate(tiny_model, tmp_path / "generated", count=4, seed=0, images=False)
    r = evaluate(paths["real"], tmp_path / "generated", paths["train"], tmp_path / "out", packets_k=64,
                 models=["rf", "dt"], seed=0, quick=True)
    sim = r["similarity"]
    assert len(sim["classes"]) >= 4
    assert sim["floor"]["jsd"] < sim["overall"]["jsd"] <= 1.0
    assert sim["floor"]["jsd"] < sim["random_baseline"]["jsd"]
    assert all(0.0 <= r["utility"][s]["micro"][m]["accuracy"] <= 1.0
               for s in ("train_real_test_real", "train_synthetic_test_real") for m in ("rf", "dt"))
    assert r["utility"]["train_real_test_real"]["micro"]["rf"]["accuracy"] > r["random_baseline"]["chance_accuracy"]["micro"]
    assert r["memorisation"]["synthetic_sequence_in_train"] is not None
    assert (tmp_path / "out" / "report.md").exists() and (tmp_path / "out" / "field_jsd.png").exists()
