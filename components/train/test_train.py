"""train component: interface, image and the TrainJob it would create (schema checks: tests/test_trainjob.py)."""

import json
from pathlib import Path

import jsonschema

from components.images import image_for
from components.train.component import train_model
from components.train.trainjob import build_trainjob, train_command


def test_interface_and_image():
    spec = train_model.component_spec
    assert set(spec.outputs) == {"model", "train_data", "holdout_data", "Output"}
    assert spec.inputs["data"].type.startswith("system.Dataset") and spec.inputs["data"].is_artifact_list
    assert {"num_nodes", "gpus_per_node", "node_selector", "tolerations", "launcher", "holdout"} <= set(spec.inputs)
    assert spec.implementation.container.image == image_for("train")


def test_trainjob_for_the_train_image_is_valid():
    schema = json.loads((Path(__file__).with_name("trainjob_schema.json")).read_text())
    job = build_trainjob("nd-test", image=image_for("train"), num_nodes=3, gpus_per_node=2,
                         command=train_command(data_uri="s3://b/d", model_uri="s3://b/m", backend="native",
                                               config="gpu", seed=0))
    jsonschema.validate(job, schema)


def test_split_dataset_holds_out_flows_per_class(tmp_path):
    import pytest

    from netdiffusion.dataset import read_packets, split_dataset
    from netdiffusion.model.testing import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", classes={"alpha": "tcp", "beta": "udp"}, flows=10)
    single = write_synthetic_dataset(tmp_path / "single", classes={"solo": "tcp"}, flows=1)
    (data / "part-1.parquet").write_bytes((single / "part-0.parquet").read_bytes())
    counts = split_dataset(data, tmp_path / "train", tmp_path / "holdout", holdout=0.2, seed=3)
    assert counts == {"train": {"alpha": 8, "beta": 8, "solo": 1}, "holdout": {"alpha": 2, "beta": 2}}
    train, held = read_packets(tmp_path / "train"), read_packets(tmp_path / "holdout")
    assert not set(train.flow_id) & set(held.flow_id)
    assert len(train) + len(held) == len(read_packets(data))
    assert (tmp_path / "holdout" / "fields.json").exists()
    again = split_dataset(data, tmp_path / "train2", tmp_path / "holdout2", holdout=0.2, seed=3)
    assert again == counts and set(read_packets(tmp_path / "holdout2").flow_id) == set(held.flow_id)
    with pytest.raises(ValueError, match="holdout"):
        split_dataset(data, tmp_path / "a", tmp_path / "b", holdout=1.0)
