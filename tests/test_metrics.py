"""Distance functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netdiffusion.evaluate.metrics import (
    distances,
    grouped_counts,
    hellinger,
    histogram_tvd,
    jsd,
    sample_distances,
    tvd,
)


def test_identical_distributions_are_zero():
    p = np.array([0.2, 0.3, 0.5])
    assert jsd(p, p) == pytest.approx(0.0, abs=1e-12)
    assert tvd(p, p) == pytest.approx(0.0, abs=1e-12)
    assert hellinger(p, p) == pytest.approx(0.0, abs=1e-12)
    # counts and probabilities give the same answer
    assert jsd(p * 50, p) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_supports_are_one():
    p = np.array([3, 1, 0, 0])
    q = np.array([0, 0, 2, 5])
    assert jsd(p, q) == pytest.approx(1.0)
    assert tvd(p, q) == pytest.approx(1.0)
    assert hellinger(p, q) == pytest.approx(1.0)


def test_hand_computed_case():
    # p = (1/2, 1/2, 0), q = (0, 1/2, 1/2), m = (1/4, 1/2, 1/4)
    # KL(p||m) = 1/2 log2(2) + 1/2 log2(1) = 1/2, same for q -> JSD = 1/2
    # TVD = 1/2 (1/2 + 0 + 1/2) = 1/2
    # HD = sqrt(1/2 * ((sqrt(1/2))^2 + 0 + (sqrt(1/2))^2)) = sqrt(1/2)
    p, q = np.array([1, 1, 0]), np.array([0, 1, 1])
    assert jsd(p, q) == pytest.approx(0.5)
    assert tvd(p, q) == pytest.approx(0.5)
    assert hellinger(p, q) == pytest.approx(math.sqrt(0.5))


def test_asymmetric_hand_case():
    # p = (0.9, 0.1), q = (0.5, 0.5): TVD 0.4; HD = sqrt(1 - (sqrt(.45) + sqrt(.05)))
    p, q = np.array([0.9, 0.1]), np.array([0.5, 0.5])
    assert tvd(p, q) == pytest.approx(0.4)
    assert hellinger(p, q) == pytest.approx(math.sqrt(1 - (math.sqrt(0.45) + math.sqrt(0.05))))
    m = np.array([0.7, 0.3])
    expected = 0.5 * sum(a * math.log2(a / b) for a, b in zip(p, m, strict=True)) + 0.5 * sum(
        a * math.log2(a / b) for a, b in zip(q, m, strict=True))
    assert jsd(p, q) == pytest.approx(expected)
    assert jsd(p, q) == pytest.approx(jsd(q, p))  # symmetric


def test_vectorized_rows_and_empty_row():
    p = np.array([[1, 0], [1, 1], [0, 0]])
    q = np.array([[0, 1], [1, 1], [1, 0]])
    d = distances(p, q)
    assert d["jsd"][0] == pytest.approx(1.0) and d["jsd"][1] == pytest.approx(0.0)
    assert np.isnan(d["jsd"][2]) and np.isnan(d["tvd"][2]) and np.isnan(d["hd"][2])


def test_sample_distances_with_wide_keys():
    a = np.array([b"\x01\x00", b"\x01\x00", b"\x00\x01"], dtype="V2")
    b = np.array([b"\x00\x01", b"\x00\x01", b"\x01\x01"], dtype="V2")
    # a = {x: 2/3, y: 1/3}, b = {y: 2/3, z: 1/3}: TVD = 2/3
    assert sample_distances(a, b)["tvd"] == pytest.approx(2 / 3)
    assert sample_distances(np.array([5, -1, 5]), np.array([-1, 5, 5]))["jsd"] == pytest.approx(0.0)


def test_grouped_counts_and_histogram_tvd():
    counts = grouped_counts(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 1]), 2, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 1]]
    bins = np.array([0.0, 10.0, 20.0])
    assert histogram_tvd([1, 2, 15], [1, 15, 15], bins) == pytest.approx(1 / 3)
    assert math.isnan(histogram_tvd([], [1.0], bins))
