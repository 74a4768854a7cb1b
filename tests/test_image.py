"""Image codec: exact round trips, colour correction under noise, control images."""

from __future__ import annotations

import numpy as np
import pytest

from netdiffusion.fields import ABSENT, Layout
from netdiffusion.image import (
    PAPER_ROWS,
    canny_edges,
    color_correct,
    control_image,
    header_lengths,
    image_to_matrix,
    mask_from_lengths,
    matrix_to_image,
    palette_array,
    presence_mask,
    select_columns,
)
from netdiffusion.model.testing import synthetic_flow

LAYOUT = Layout()


@pytest.fixture()
def flow() -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.concatenate([synthetic_flow(LAYOUT, "tcp", 20, rng), synthetic_flow(LAYOUT, "udp", 7, rng)])


@pytest.mark.parametrize("palette", ["paper", "sd3", {1: (10, 20, 30), 0: (200, 0, 0), -1: (0, 0, 90)}])
def test_round_trip_exact(flow: np.ndarray, palette) -> None:
    img = matrix_to_image(flow, palette=palette)
    assert img.shape == (PAPER_ROWS, LAYOUT.width, 3) and img.dtype == np.uint8
    back, conf = image_to_matrix(img, palette=palette, packets=len(flow))
    np.testing.assert_array_equal(back, flow)
    assert (conf == 1).all()
    trimmed, _ = image_to_matrix(img, palette=palette, trim=True)
    np.testing.assert_array_equal(trimmed, flow)


def test_paper_palette_colours(flow: np.ndarray) -> None:
    img = matrix_to_image(flow, palette="paper", rows=None)
    assert tuple(img[flow == 1][0]) == (0, 255, 0)
    assert tuple(img[flow == 0][0]) == (255, 0, 0)
    assert tuple(img[flow == ABSENT][0]) == (128, 128, 128)


def test_column_subset_drops_addresses(flow: np.ndarray) -> None:
    cols = select_columns(LAYOUT, drop_fields=["ipv4_src", "ipv4_dst"])
    assert len(cols) == LAYOUT.width - 64
    img = matrix_to_image(flow, columns=cols)
    assert img.shape == (PAPER_ROWS, LAYOUT.width - 64, 3)
    back, _ = image_to_matrix(img, columns=cols, width=LAYOUT.width, packets=len(flow))
    keep = np.ones(LAYOUT.width, bool)
    keep[LAYOUT.field_slice("ipv4_src")] = keep[LAYOUT.field_slice("ipv4_dst")] = False
    np.testing.assert_array_equal(back[:, keep], flow[:, keep])
    assert (back[:, ~keep] == ABSENT).all()


def test_color_correction_recovers_noisy_image(flow: np.ndarray) -> None:
    img = matrix_to_image(flow)
    rng = np.random.default_rng(0)
    noisy = np.clip(img.astype(np.int16) + rng.integers(-50, 51, img.shape), 0, 255).astype(np.uint8)
    back, conf = image_to_matrix(noisy, packets=len(flow))
    np.testing.assert_array_equal(back, flow)
    assert conf.shape == flow.shape and 0 < conf.min() and conf.max() <= 1
    assert conf.mean() < 1  # noise lowers confidence


def test_confidence_is_low_between_colours() -> None:
    colours = palette_array("paper").astype(np.int16)
    midway = ((colours[0] + colours[2]) // 2).astype(np.uint8)
    _, conf = color_correct(np.array([[midway, colours[0].astype(np.uint8)]]))
    assert conf[0, 0] < 0.05 and conf[0, 1] == 1


def test_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="1/0/-1"):
        matrix_to_image(np.full((2, 4), 3, dtype=np.int8))


def test_control_mask_matches_field_presence(flow: np.ndarray) -> None:
    mask = presence_mask(flow, rows=PAPER_ROWS)
    assert mask.shape == (PAPER_ROWS, LAYOUT.width)
    assert not mask[len(flow):].any()
    for i, header in enumerate(LAYOUT.headers):
        s = LAYOUT.header_slice(header)
        np.testing.assert_array_equal(mask[: len(flow), s].any(axis=1), LAYOUT.presence(flow)[:, i])
    # tcp options: exactly the 12 option bytes the synthetic flow carries
    tcp = LAYOUT.header_slice("tcp")
    assert mask[0, tcp].sum() == 32 * 8
    np.testing.assert_array_equal(mask_from_lengths(header_lengths(flow, LAYOUT), LAYOUT), mask[: len(flow)])
    img = control_image(flow, "mask")
    assert img.shape == (PAPER_ROWS, LAYOUT.width, 3)
    np.testing.assert_array_equal(img[..., 0] == 255, mask)


def test_canny_edges_outline_header_regions(flow: np.ndarray) -> None:
    edges = canny_edges(matrix_to_image(flow))
    assert edges.shape == (PAPER_ROWS, LAYOUT.width, 3)
    assert set(np.unique(edges)) <= {0, 255}
    assert edges[: len(flow)].any()
    assert not edges[len(flow) + 2 :].any()  # uniform padding has no edges
    np.testing.assert_array_equal(control_image(flow, "canny"), edges)
