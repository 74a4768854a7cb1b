"""Narrow nPrint fields read and written eight columns at a time.

An int8 nPrint row read as little-endian uint64 words holds eight columns per word, column ``8j + i``
in byte ``i`` of word ``j``. A field of up to 62 bits spans a few words; the per-byte tests below
(SWAR: SIMD within a register) decode or compare all its columns with a handful of operations per
word. :func:`read` and :func:`put` are compiled loops over rows (one pass, no temporaries); the numpy
:func:`block` / :func:`values` pair serves :meth:`netdiffusion.fields.Layout.field_values`.

The tests are exact for every int8 value (not only 1 / 0 / -1): a column counts as set where it is
positive, as absent where it is negative, and a write compares each column with the bit written,
so the results equal those of the plain per-column code. Field positions come from
:class:`netdiffusion.fields.Layout`; nothing here knows a layout.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from netdiffusion.jit import kernel

_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH = np.uint64(0x8080808080808080)
_ONES = np.uint64(0x0101010101010101)
_GATHER = np.uint64(0x8040201008040201)  # eight byte flags (bit 0 of each byte) -> one byte, byte 0 first
_SPREAD = np.uint64(0x0102040810204080)  # one byte replicated -> byte i keeps bit 7 - i
_7, _56 = np.uint64(7), np.uint64(56)
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
HIGH, FULL = _HIGH, _FULL  # for kernels elsewhere
NEGATIVE, MINUS_ONE, NEVER = 0, 1, 2  # read(absent=): which columns make a value absent (-1)
ABSENT_MASK = 3  # read(absent=): no value, the field's negative columns as a bit mask instead


def usable(matrix: np.ndarray) -> bool:
    """Whether the kernels can read the matrix as words (int8, rows a whole number of words)."""
    return matrix.ndim == 2 and matrix.dtype == np.int8 and matrix.shape[1] % 8 == 0


# -- compiled: one row at a time, straight from the matrix's words ---------------------------------

def words_of(matrix: np.ndarray) -> np.ndarray:
    """The ``(rows, width / 8)`` uint64 view the kernels read (a C-contiguous int8 matrix)."""
    if not (usable(matrix) and matrix.flags.c_contiguous):
        raise ValueError("bitwords kernels need a C-contiguous int8 matrix whose width is a multiple of 8")
    return matrix.view(np.uint64)


@kernel
def nonzero_bytes(x: np.uint64) -> np.uint64:
    """0x80 in each byte of ``x`` that is not zero."""
    return (((x & _LOW7) + _LOW7) | x) & _HIGH


@kernel
def pack(x: np.uint64) -> np.uint64:
    """Byte ``i`` positive -> bit ``7 - i`` of the result (a byte of 8 columns, first column highest)."""
    return (((nonzero_bytes(x) & ~x) >> _7) * _GATHER) >> _56


@kernel
def unpack(b8: np.uint64) -> np.uint64:
    """The inverse of :func:`pack` for 0 / 1 columns: bit ``7 - i`` of ``b8`` -> byte ``i`` (0 / 1)."""
    return ((((b8 * _ONES) & _SPREAD) + _LOW7) & _HIGH) >> _7


@kernel
def count_bytes(x: np.uint64) -> int:
    """How many bytes of ``x`` have their high bit set (the others must be 0)."""
    return np.int64(((x >> _7) * _ONES) >> _56)


# The loops below read the words in place (a helper taking the array, called per row, costs ~10x:
# numba keeps its reference counting). Columns ``col:col + k`` (k <= 8) of a row are bytes 0:k of
# ``words[j] >> s | words[j + 1] << (64 - s)`` (j = col // 8, s = 8 * (col % 8); the second word
# only where they straddle two).

@intrinsic
def prefetch(typingctx, array, index):  # noqa: ANN001, ANN201 (numba's intrinsic protocol)
    """Hint the CPU to fetch ``array[index]``'s cache line (1-D array; no fault if out of range).

    Rows of a wide matrix visited in order are 1,408 bytes apart: the hardware prefetcher misses
    most of their lines, and a loop body long enough to hold only a row or two in flight waits on
    memory for each. Prefetching a few rows ahead overlaps those waits (3-4x on rules that read
    two cache lines per row)."""
    sig = types.void(array, index)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p, i32 = llvm_ir.IntType(8).as_pointer(), llvm_ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, keep, data
        return context.get_dummy_value()

    return sig, codegen


AHEAD = 16  # rows prefetched ahead


@kernel
def prefetch_row(flat: np.ndarray, base: int, first: int, last: int) -> None:
    """Prefetch the words ``first..last`` (inclusive) from ``flat[base]``: one hint per cache line."""
    for j in range(first, last + 1, 8):
        prefetch(flat, base + j)
    prefetch(flat, base + last)


@kernel
def read(words: np.ndarray, rows: np.ndarray, every: bool, starts: np.ndarray, widths: np.ndarray,
         absent: int) -> np.ndarray:
    """Values of fields (``widths[f]`` <= 62 columns from ``starts[f]``) of ``rows`` (of every row
    where ``every``), positive columns read as 1: ``(rows, fields)`` int64, all fields of a row
    read together (one visit to its cache lines, prefetched). ``absent``: -1 where a column is
    negative (:data:`NEGATIVE`), equal to -1 (:data:`MINUS_ONE`), or never (:data:`NEVER`: an
    absent column reads as 0); with :data:`ABSENT_MASK`, not the value but its negative columns as
    bits, the first column highest."""
    nw = words.shape[1]
    flat = words.reshape(-1)
    n = words.shape[0] if every else len(rows)
    out = np.empty((n, len(starts)), dtype=np.int64)
    if not n or not len(starts):
        return out
    first = starts.min() >> 3
    last = (starts + widths - 1).max() >> 3
    for i in range(n):
        if i + AHEAD < n:
            prefetch_row(flat, (i + AHEAD if every else rows[i + AHEAD]) * nw, first, last)
        base = (i if every else rows[i]) * nw
        for f in range(len(starts)):
            start = starts[f]
            s = np.uint64(8 * (start & 7))
            value = np.uint64(0)
            gone = np.uint64(0)
            col = start
            rem = widths[f]
            while rem > 0:
                k = min(rem, 8)
                j = base + (col >> 3)
                x = flat[j]
                if s:
                    x >>= s
                    if (col & 7) + k > 8:
                        x |= flat[j + 1] << (np.uint64(64) - s)
                bm = _FULL >> np.uint64(64 - 8 * k)
                if absent == ABSENT_MASK:
                    value = (value << np.uint64(k)) | (((((x & _HIGH & bm) >> _7) * _GATHER) >> _56)
                                                       >> np.uint64(8 - k))
                else:
                    value = (value << np.uint64(k)) | (pack(x & bm) >> np.uint64(8 - k))
                if absent == NEGATIVE:
                    gone |= x & _HIGH & bm
                elif absent == MINUS_ONE:
                    gone |= ~nonzero_bytes(~x) & _HIGH & bm
                col += 8
                rem -= 8
            out[i, f] = -1 if gone else np.int64(value)
    return out


def absent_columns(words: np.ndarray, starts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Per row, the absent (negative) columns of each field (``widths[f]`` <= 62 columns from
    ``starts[f]``) as a bit mask, the field's first column highest (as its bits weigh in its
    value): ``(rows, fields)`` int64 (:func:`read` with :data:`ABSENT_MASK`). Why: a
    column-by-column loop over a wide row matrix waits on memory for every row."""
    return read(words, np.zeros(0, dtype=np.int64), True, np.asarray(starts, dtype=np.int64),
                np.asarray(widths, dtype=np.int64), ABSENT_MASK)


@kernel
def put(words: np.ndarray, rows: np.ndarray, every: bool, starts: np.ndarray, widths: np.ndarray,
        values: np.ndarray, skip: bool, counts: np.ndarray, changed: np.ndarray, mask_of: np.ndarray) -> np.ndarray:
    """Write the low ``widths[f]`` bits of ``values[i, f]`` (a row per row, or one row for all) as
    1 / 0 columns from ``starts[f]`` of ``rows`` (of every row where ``every``), all fields of a
    row together (with ``skip``, a negative value leaves its field of that row alone); a column
    already equal to its bit is left alone. Adds each row's changed columns to ``counts`` and
    flags the rows where field ``f`` changed in ``changed[mask_of[f]]``. Returns per mask how many
    rows it flagged."""
    nw = words.shape[1]
    flat = words.reshape(-1)
    n = words.shape[0] if every else len(rows)
    one = values.shape[0] == 1
    flagged = np.zeros(changed.shape[0], dtype=np.int64)
    if not n or not len(starts):
        return flagged
    first = starts.min() >> 3
    last = (starts + widths - 1).max() >> 3
    for i in range(n):
        if i + AHEAD < n:
            prefetch_row(flat, (i + AHEAD if every else rows[i + AHEAD]) * nw, first, last)
        r = i if every else rows[i]
        base = r * nw
        total = 0
        for f in range(len(starts)):
            value = values[0, f] if one else values[i, f]
            if skip and value < 0:
                continue
            start = starts[f]
            s = np.uint64(8 * (start & 7))
            t = np.uint64(64) - s
            v = np.uint64(value)
            count = 0
            col = start
            rem = widths[f]
            while rem > 0:
                k = min(rem, 8)
                rem -= k
                part = (v >> np.uint64(rem)) & ((np.uint64(1) << np.uint64(k)) - np.uint64(1))
                bm = _FULL >> np.uint64(64 - 8 * k)
                new = unpack(part << np.uint64(8 - k)) & bm
                j = base + (col >> 3)
                two = s != 0 and (col & 7) + k > 8
                x = flat[j]
                if s:
                    x >>= s
                    if two:
                        x |= flat[j + 1] << t
                c = count_bytes(nonzero_bytes(x ^ new) & bm)
                if c:
                    count += c
                    flat[j] = (flat[j] & ~(bm << s)) | (new << s)
                    if two:
                        flat[j + 1] = (flat[j + 1] & ~(bm >> t)) | (new >> t)
                col += 8
            if count:
                total += count
                m = mask_of[f]
                if not changed[m, r]:
                    changed[m, r] = True
                    flagged[m] += 1
        counts[r] += total
    return flagged
