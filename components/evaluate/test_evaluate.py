"""evaluate component: interface, image and the headline numbers it reports."""

from components.common import evaluation_headline
from components.evaluate.component import evaluate_synthetic
from components.images import image_for


def test_interface_and_image():
    spec = evaluate_synthetic.component_spec
    assert spec.inputs["synthetic"].is_artifact_list and not spec.inputs["real"].is_artifact_list
    assert set(spec.outputs) == {"report", "Output"}
    assert spec.implementation.container.image == image_for("evaluate")


def test_headline_picks_known_keys_and_skips_missing():
    report = {"similarity": {"overall": {"jsd": 0.123456, "tvd": 0.2}, "floor": {"jsd": 0.05}},
              "utility": {"train_synthetic_test_real": {"micro": {"rf": {"accuracy": 0.8}}}}}
    assert evaluation_headline(report) == {"jsd": 0.1235, "tvd": 0.2, "jsd_floor": 0.05, "tstr_rf_accuracy": 0.8}
    assert evaluation_headline({}) == {}
