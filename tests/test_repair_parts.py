"""Repair of a class larger than a part: whole flows a part at a time, the same files as in one go.

Why: a class of COUNT=5000 generated flows of ~900 packets is ~4.5 M rows (6 GB of int8 rows, and
repair's working memory several times that); repaired in parts, memory holds one part.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import netdiffusion.dataset as dataset_module
import netdiffusion.repair as repair_module
from netdiffusion.dataset import Packets, read_layout, read_packets, write_fields, write_shard
from netdiffusion.pcap.reader import iter_records
from netdiffusion.repair import _flow_cuts, repair_dataset
from netdiffusion.validate import validate_dir

CLASSES = ["zoom", "whatsapp", "reddit"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.pcap"))}


def _rows(dataset: Path) -> Packets:
    packets = read_packets(dataset)
    return packets.take(np.lexsort((packets.packet_index, packets.flow_id)))


def _totals(out: Path) -> dict:
    totals = json.loads((out / "repair_report.json").read_text())["totals"]
    return {k: v for k, v in totals.items() if k not in ("seconds", "cpu_seconds", "output")}


def _dataset(small_dataset: Path, out: Path, shards: int = 1) -> Path:
    """The classes of ``small_dataset`` in ``shards`` shards, cut by rows: a flow may span two."""
    layout = read_layout(small_dataset)
    packets = read_packets(small_dataset, labels=CLASSES)
    write_fields(out, layout)
    for i, rows in enumerate(np.array_split(np.arange(len(packets)), shards)):
        write_shard(packets.take(rows), out / f"part-{i}.parquet")
    return out


def test_flow_cuts_fall_between_flows_and_a_long_flow_is_a_part_alone() -> None:
    flow_id = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 7 + ["d"] * 1 + ["e"] * 2, dtype=object)
    assert _flow_cuts(flow_id, 100) == [(0, 15)]
    assert _flow_cuts(flow_id, 5) == [(0, 5), (5, 12), (12, 15)]
    assert _flow_cuts(flow_id, 4) == [(0, 3), (3, 5), (5, 12), (12, 15)]
    assert _flow_cuts(flow_id, 1) == [(0, 3), (3, 5), (5, 12), (12, 13), (13, 15)]


@pytest.mark.parametrize("anonymize", [False, True])
def test_a_class_in_parts_gives_the_same_pcaps_merged_pcap_and_dataset(small_dataset: Path, tmp_path: Path,
                                                                        anonymize: bool) -> None:
    data = _dataset(small_dataset, tmp_path / "in")
    whole = repair_dataset(data, tmp_path / "whole", dataset_output=tmp_path / "whole_ds", merged=True,
                           anonymize=anonymize, progress=False)
    parts = repair_dataset(data, tmp_path / "parts", dataset_output=tmp_path / "parts_ds", merged=True,
                           anonymize=anonymize, progress=False, part_rows=300)
    assert whole["flows"] == parts["flows"] > 60
    assert _totals(tmp_path / "whole") == _totals(tmp_path / "parts")
    assert _files(tmp_path / "whole") == _files(tmp_path / "parts")  # every flow's pcap and the merged ones
    shards = sorted(p.name for p in (tmp_path / "parts_ds").glob("zoom*.parquet"))
    assert shards[-1] == "zoom.parquet" and len(shards) >= 2 and shards[0] == "zoom-p0001.parquet", shards
    a, b = _rows(tmp_path / "whole_ds"), _rows(tmp_path / "parts_ds")
    assert np.array_equal(a.nprint, b.nprint) and np.array_equal(a.timestamp, b.timestamp)
    assert a.flow_id.tolist() == b.flow_id.tolist()
    if anonymize:  # numbered across a class's parts: no two of its flows share an endpoint pair
        layout = read_layout(data)
        v4 = layout.header_present(b.nprint, "ipv4")
        pairs = {(c, f, min(s, d), max(s, d)) for c, f, s, d in zip(
            b.label[v4].tolist(), b.flow_id[v4].tolist(), layout.field_values(b.nprint[v4], "ipv4_src").tolist(),
            layout.field_values(b.nprint[v4], "ipv4_dst").tolist(), strict=True)}
        for label in ("zoom", "whatsapp"):  # the IPv4 classes
            of_class = [p for p in pairs if p[0] == label]
            assert len({p[2:] for p in of_class}) == len({p[1] for p in of_class}) > 10, label


def test_a_large_dataset_read_a_part_at_a_time_keeps_every_flow_whole(small_dataset: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Datasets over READ_ONCE_BYTES are read a class at a time; a class over part_rows a group of
    flows at a time, from the shards that hold them (a flow cut across two shards comes whole)."""
    data = _dataset(small_dataset, tmp_path / "in", shards=5)
    repair_dataset(data, tmp_path / "whole", merged=True, progress=False)
    monkeypatch.setattr(dataset_module, "READ_ONCE_BYTES", 0)
    parts = repair_dataset(data, tmp_path / "parts", dataset_output=tmp_path / "ds", merged=True, progress=False,
                           part_rows=250)
    assert _totals(tmp_path / "whole") == _totals(tmp_path / "parts")
    a, b = _files(tmp_path / "whole"), _files(tmp_path / "parts")
    merged = {k for k in a if k.endswith("_merged.pcap")}
    assert len(merged) == len(CLASSES) and a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k not in merged} == {k: v for k, v in b.items() if k not in merged}
    # the merged pcaps hold every packet (flows in shard order here), and tshark finds no error
    for name in merged:
        assert sum(len(r.offset) for r in iter_records(tmp_path / "parts" / name)) == sum(
            f["packets"] for f in json.loads((tmp_path / "parts" / "repair_report.json").read_text())["flows"]
            if f["label"] == name.split("/")[0])
    check = tmp_path / "check"
    for name in merged:
        (check / name).parent.mkdir(parents=True)
        (check / name).write_bytes(b[name])
    report = validate_dir(check, progress=False, tcpreplay=False)
    assert report["totals"]["files_failed"] == 0, report["files"]
    assert parts["packets"] == len(read_packets(tmp_path / "ds"))


def test_an_error_in_a_later_part_leaves_no_merged_pcap(small_dataset: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(small_dataset, tmp_path / "in")
    real, calls = repair_module.repair_packets, []

    def failing(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory in part 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(repair_module, "repair_packets", failing)
    with pytest.raises(MemoryError):
        repair_dataset(data, tmp_path / "out", merged=True, progress=False, part_rows=300)
    left = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not [n for n in left if n.endswith((".tmp", "_merged.pcap"))], left
