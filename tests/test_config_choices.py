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
