"""The compiled eight-columns-at-a-time field kernels against plain per-column numpy.

The kernels claim to be exact for every int8 value (positive: set, negative: absent), at any
column alignment and width up to 62: checked here on random rows holding all 256 values."""

from __future__ import annotations

import numpy as np
import pytest

from netdiffusion import bitwords as W

SPANS = [(0, 1), (0, 8), (3, 5), (5, 16), (7, 32), (13, 13), (64, 62), (1, 62), (200, 24)]


def _rows(seed: int, rows: int = 600, width: int = 272) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(-128, 128, size=(rows, width)).astype(np.int8)
    m[rng.random(m.shape) < 0.4] = -1  # nPrint's absent, in runs too
    m[rng.random(m.shape) < 0.3] = 0
    m[rng.integers(0, rows, 40)] = -1  # whole rows absent
    return m


def _plain_value(m: np.ndarray, start: int, width: int) -> np.ndarray:
    cols = m[:, start : start + width]
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    value = ((cols > 0).astype(np.int64) * weights).sum(axis=1)
    return np.where((cols < 0).any(axis=1), -1, value)


def _plain_absent(m: np.ndarray, start: int, width: int) -> np.ndarray:
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((m[:, start : start + width] < 0).astype(np.int64) * weights).sum(axis=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_absent_columns_and_read_equal_per_column_code(seed: int) -> None:
    m = _rows(seed)
    starts = np.array([s for s, _ in SPANS], dtype=np.int64)
    widths = np.array([w for _, w in SPANS], dtype=np.int64)
    absent = W.absent_columns(W.words_of(m), starts, widths)
    values = W.read(W.words_of(m), np.zeros(0, dtype=np.int64), True, starts, widths, W.NEGATIVE)
    for f, (start, width) in enumerate(SPANS):
        assert np.array_equal(absent[:, f], _plain_absent(m, start, width)), (start, width)
        assert np.array_equal(values[:, f], _plain_value(m, start, width)), (start, width)
    assert (absent != 0).any() and (absent == 0).any()  # both cases were exercised


def test_absent_columns_of_no_rows_or_no_fields() -> None:
    m = _rows(2)
    assert W.absent_columns(W.words_of(m[:0]), np.array([0]), np.array([8])).shape == (0, 1)
    assert W.absent_columns(W.words_of(m), np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (len(m), 0)
