"""validate component: interface, image and the merge of per-class pcap trees."""

import pytest

from components.common import merge_trees
from components.images import image_for
from components.validate.component import validate_pcaps


def test_interface_and_image():
    spec = validate_pcaps.component_spec
    assert spec.inputs["repaired"].is_artifact_list
    assert set(spec.outputs) == {"pcaps", "report", "Output"}
    assert spec.implementation.container.image == image_for("validate")


def test_merge_trees_keeps_class_folders_and_refuses_clashes(tmp_path):
    for task, label in (("t1", "zoom"), ("t2", "webex")):
        (tmp_path / task / label).mkdir(parents=True)
        (tmp_path / task / label / "f1.pcap").write_bytes(b"pcap")
        (tmp_path / task / "repair_report.json").write_text("{}")
    assert merge_trees([tmp_path / "t1", tmp_path / "t2"], tmp_path / "out", "*.pcap") == 2
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                  if p.is_file()) == ["webex/f1.pcap", "zoom/f1.pcap"]
    with pytest.raises(FileExistsError):
        merge_trees([tmp_path / "t1"], tmp_path / "out", "*.pcap")
