"""Config values with a fixed set of choices are checked when the config is loaded (before training)."""

from __future__ import annotations

import pytest

from netdiffusion.model.config import CHOICES, ConfigError, load_config


@pytest.mark.parametrize("key", ["sampler", "beta_schedule"])
def test_unknown_diffusion_choice_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match=f"diffusion.{key}: must be one of"):
        load_config({"preset": "tiny", "diffusion": {key: "foo"}})


def test_sampler_choices_are_the_samplers_generate_knows() -> None:
    from netdiffusion.model.native import SAMPLERS

    assert set(CHOICES["diffusion.sampler"]) == set(SAMPLERS)
    for preset in ("tiny", "default", "gpu"):
        load_config(preset)
    for preset in ("sd-tiny", "sd"):
        load_config(preset, backend="sd")


@pytest.mark.parametrize(("key", "value"), [("control", "edges"), ("palette", "sd4")])
def test_unknown_sd_choice_is_a_config_error(key: str, value: str) -> None:
    # before: control trained fine and only generate refused it; an unknown palette was a KeyError mid-training
    with pytest.raises(ConfigError, match=f"config {key}: must be one of"):
        load_config({"preset": "sd-tiny", key: value}, backend="sd")


@pytest.mark.parametrize(("template", "match"), [
    (None, "must be a string"),  # was an AttributeError traceback in train_sd
    ("flow of {label} #{idx}", "cannot be formatted"),  # was a KeyError traceback
    ("pixelated network data", "every class the same prompt"),  # silently dropped the class conditioning
])
def test_bad_prompt_template_is_a_config_error(template: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config({"preset": "sd-tiny", "prompt_template": template}, backend="sd")
    load_config({"preset": "sd-tiny", "prompt_template": "{label} traffic"}, backend="sd")


def test_init_from_is_refused_by_the_sd_backend() -> None:
    # train_sd ignored it silently: a "refresh" of an SD model trained a fresh LoRA on the base
    with pytest.raises(ConfigError, match="init_from: only the native backend"):
        load_config({"preset": "sd-tiny", "init_from": "/models/previous"}, backend="sd")
    load_config({"preset": "tiny", "init_from": "/models/previous"})


def test_ema_decay_is_refused_by_the_sd_backend() -> None:
    # train_sd keeps no EMA: a non-zero ema_decay was ignored silently
    with pytest.raises(ConfigError, match="ema_decay: the sd backend keeps no EMA"):
        load_config({"preset": "sd-tiny", "training": {"ema_decay": 0.999}}, backend="sd")
