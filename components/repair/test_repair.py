"""repair component: interface and image (kfp.local runs: tests/test_components.py)."""

from components.images import image_for
from components.repair.component import repair_flows


def test_interface_and_image():
    spec = repair_flows.component_spec
    assert set(spec.inputs) == {"generated", "anonymize", "payload"}
    assert set(spec.outputs) == {"repaired", "repaired_data", "Output"}
    assert spec.implementation.container.image == image_for("repair")
