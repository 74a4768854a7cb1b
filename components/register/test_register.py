"""register/resolve/publish components: interfaces and image (kfp.local runs: tests/test_components.py)."""

from components.images import image_for
from components.register.component import publish_outputs, register_model, resolve_model


def test_interfaces_and_image():
    assert {"model", "data", "validation", "evaluation", "promote", "tracking_uri"} <= set(
        register_model.component_spec.inputs)
    assert set(resolve_model.component_spec.outputs) == {"model", "Output"}
    assert publish_outputs.component_spec.inputs["repaired_data"].is_artifact_list
    for comp in (register_model, resolve_model, publish_outputs):
        assert comp.component_spec.implementation.container.image == image_for("register")
