"""generate component: interface and image (kfp.local runs: tests/test_components.py)."""

from components.generate.component import generate_class
from components.images import image_for


def test_interface_and_image():
    spec = generate_class.component_spec
    assert set(spec.inputs) == {"model", "label", "count", "seed", "batch", "gpus", "accelerator"}
    assert set(spec.outputs) == {"generated", "Output"}
    assert spec.implementation.container.image == image_for("generate")
