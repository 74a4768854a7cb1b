"""Narrow nPrint fields read and written eight columns at a time.

An int8 nPrint row read as little-endian uint64 words holds eight columns per word, column ``8j + i``
in byte ``i`` of word ``j``. A field of up to 62 bits spans a few words; the per-byte tests below
(SWAR: SIMD within a register) decode or compare all its columns with a handful of whole-array
operations per word, where per-column numpy work on a ``(rows, width)`` block pays a loop per row.

The tests are exact for every int8 value (not only 1 / 0 / -1): a column counts as set where it is
positive, as absent where it is negative, and a write compares each column with the bit written,
so the results equal those of the plain per-column code. Field positions come from
:class:`netdiffusion.fields.Layout`; nothing here knows a layout.
"""

from __future__ import annotations

import numpy as np

_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)
_ONES = np.uint64(0x0101010101010101)
_GATHER = np.uint64(0x8040201008040201)  # eight byte flags (bit 0 of each byte) -> one byte, byte 0 first
_SPREAD = np.uint64(0x0102040810204080)  # one byte replicated -> byte i keeps bit 7 - i
_7, _8, _56 = np.uint64(7), np.uint64(8), np.uint64(56)


def _nonzero_high(x: np.ndarray) -> np.ndarray:
    """High bit of each byte set where that byte of ``x`` is not zero (uint64, exact)."""
    t = x & _LOW7
    t += _LOW7
    t |= x
    t &= _HIGH
    return t


def _column_masks(start: int, stop: int, k: int) -> list[int]:
    """Per word: 0xFF in the bytes of columns ``start:stop`` (relative to the first word)."""
    cols = np.zeros(8 * k, dtype=np.uint8)
    cols[start:stop] = 0xFF
    return [int(w) for w in cols.view("<u8")]


def usable(matrix: np.ndarray) -> bool:
    """Whether :func:`block` can read the matrix (int8, rows a whole number of words)."""
    return matrix.ndim == 2 and matrix.dtype == np.int8 and matrix.shape[1] % 8 == 0


def block(matrix: np.ndarray, rows: np.ndarray | None, field: slice) -> tuple[np.ndarray, int, int]:
    """The words holding columns ``field`` of ``rows`` (all rows for ``None``): ``(words, first
    column, number of words)``, words a contiguous ``(rows, k)`` uint64 array (a view of the
    matrix where those columns are contiguous already, e.g. one row: never write to it)."""
    a0 = field.start - field.start % 8
    k = -(-(field.stop - a0) // 8)
    cols = slice(a0, a0 + 8 * k)
    raw = matrix[:, cols] if rows is None else matrix[rows, cols]
    return np.ascontiguousarray(raw).view("<u8"), a0, k


def values(words: np.ndarray, start: int, stop: int, absent: str = "negative") -> np.ndarray:
    """Big-endian value of columns ``start:stop`` (relative to the block's first column) per row,
    positive columns read as 1; -1 where any of them is absent (int64): negative, or with
    ``absent="minus_one"`` equal to -1 (:meth:`Layout.field_values`' test)."""
    k = words.shape[1]
    masks = _column_masks(start, stop, k)
    if absent not in ("negative", "minus_one"):
        raise ValueError(f"absent must be 'negative' or 'minus_one', not {absent!r}")
    value = gone = None
    for j in range(k):
        x = words[:, j]
        pos = _nonzero_high(x)
        pos &= ~x  # positive: not zero and sign bit clear
        pos >>= _7
        pos *= _GATHER
        pos >>= _56
        value = pos if value is None else (value << _8) | pos
        # sign bit, or the high bit of 0xFF bytes (a new array: x may be a view of the matrix)
        neg = x & np.uint64(masks[j] & 0x8080808080808080)
        if absent == "minus_one":
            neg &= ~_nonzero_high(~x)
        gone = neg if gone is None else gone | neg
    value >>= np.uint64(8 * k - stop)
    value &= np.uint64((1 << (stop - start)) - 1)
    out = value.astype(np.int64)
    out[gone != 0] = -1
    return out


def spread(new: np.ndarray, start: int, stop: int, k: int) -> list[np.ndarray]:
    """Per word of a block: the bytes (0 / 1) of ``new``'s low ``stop - start`` bits at columns
    ``start:stop``, zero elsewhere."""
    aligned = new.astype(np.uint64) << np.uint64(8 * k - stop)
    masks = _column_masks(start, stop, k)
    out = []
    for j in range(k):
        byte = (aligned >> np.uint64(8 * (k - 1 - j))) & np.uint64(0xFF)
        t = byte * _ONES
        t &= _SPREAD
        t += _LOW7
        t &= _HIGH
        t >>= _7
        t &= np.uint64(masks[j])
        out.append(t)
    return out


def differing(words: np.ndarray, new_words: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """Per row: how many of the columns ``start:stop`` differ from the bytes ``new_words``."""
    masks = _column_masks(start, stop, words.shape[1])
    count = None
    for j, nw in enumerate(new_words):
        d = _nonzero_high(words[:, j] ^ nw)
        d &= np.uint64(masks[j] & 0x8080808080808080)
        c = np.bitwise_count(d)
        count = c.astype(np.int64) if count is None else count + c
    return count


def merged(words: np.ndarray, new_words: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """``words`` with columns ``start:stop`` replaced by ``new_words`` (as int8 columns)."""
    masks = _column_masks(start, stop, words.shape[1])
    out = np.empty_like(words)
    for j, nw in enumerate(new_words):
        out[:, j] = (words[:, j] & np.uint64(~masks[j] & 0xFFFFFFFFFFFFFFFF)) | nw
    return out.view(np.int8)
