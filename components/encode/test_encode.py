"""encode component: interface and shard planning (fast; the kfp.local runs are in tests/test_components.py)."""

import json

import pytest

from components.common import plan_shards, read_manifest
from components.encode.component import encode_shard, list_classes
from components.encode.component import plan_shards as plan_component
from components.images import image_for


def test_interface_and_image():
    assert set(encode_shard.component_spec.inputs) == {"shard", "packets"}
    assert set(encode_shard.component_spec.outputs) == {"data", "Output"}
    assert encode_shard.component_spec.outputs["data"].type.startswith("system.Dataset")
    for comp in (encode_shard, plan_component, list_classes):
        assert comp.component_spec.implementation.container.image == image_for("encode")


def test_plan_shards_balances_sizes_and_keeps_every_capture(tmp_path):
    sizes = {"a": 900, "b": 500, "c": 400, "d": 100, "e": 10}
    lines = ["path,label,macro,source"]
    for name, size in sizes.items():
        (tmp_path / "pcaps").mkdir(exist_ok=True)
        (tmp_path / "pcaps" / f"{name}.pcap").write_bytes(b"x" * size)
        lines.append(f"pcaps/{name}.pcap,{'x' if name < 'c' else 'y'},m,s")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    rows = read_manifest(str(tmp_path), tmp_path / "scratch")
    shards = [json.loads(s) for s in plan_shards(str(tmp_path), rows, 2)]
    totals = sorted(sum(sizes[f["path"][6]] for f in s["files"]) for s in shards)
    assert totals == [910, 1000]
    assert sorted(f["path"] for s in shards for f in s["files"]) == sorted(f"pcaps/{n}.pcap" for n in sizes)
    assert len(plan_shards(str(tmp_path), rows, 99)) == len(sizes)  # never more shards than captures
    assert [r["label"] for r in read_manifest(str(tmp_path), tmp_path / "s", ["y"])] == ["y", "y", "y"]
    with pytest.raises(ValueError, match="zoom"):
        read_manifest(str(tmp_path), tmp_path / "s", ["zoom"])
    # a class the manifest lacks, asked for with others, is skipped with a warning: the others run
    assert [r["label"] for r in read_manifest(str(tmp_path), tmp_path / "s", ["y", "zoom"])] == ["y", "y", "y"]


def test_folder_without_manifest_is_labelled_by_class_folders(tmp_path):
    """`netdiffusion run --input DIR` on captures sorted into class folders, with no manifest.csv."""
    for rel in ("zoom/a.pcap", "zoom/b.pcapng", "teams/x.pcap.gz", "meet_03.pcap", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    rows = read_manifest(str(tmp_path), tmp_path / "scratch")
    assert sorted((r["path"], r["label"]) for r in rows) == [
        ("meet_03.pcap", "meet"), ("teams/x.pcap.gz", "teams"), ("zoom/a.pcap", "zoom"), ("zoom/b.pcapng", "zoom")]
    assert [r["path"] for r in read_manifest(str(tmp_path), tmp_path / "s", ["zoom"])] == ["zoom/a.pcap", "zoom/b.pcapng"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no captures"):
        read_manifest(str(empty), tmp_path / "s")
