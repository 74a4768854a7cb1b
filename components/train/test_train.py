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
