"""Compiled kernels for the per-packet hot paths (repair rules, packet bytes).

Numpy is fast per operation but repair needs hundreds of passes over every packet; a loop compiled
with numba does the same work in one pass per rule. Every kernel here is a plain function over
numpy arrays: field positions and widths always come from :mod:`netdiffusion.fields` as arguments,
never from constants in a kernel. Compiled code is cached on disk (next to this package, or in the
user's cache folder when that is read-only), so only the first process on a machine pays the
compile time. ``NETDIFFUSION_NO_JIT_CACHE=1`` turns the disk cache off.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import numba

F = TypeVar("F", bound=Callable)

_CACHE = os.environ.get("NETDIFFUSION_NO_JIT_CACHE", "") not in ("1", "true", "yes")


def kernel(fn: F) -> F:
    """Compile ``fn`` in nopython mode (no Python objects inside), cached, releasing the GIL."""
    return numba.njit(cache=_CACHE, nogil=True)(fn)  # type: ignore[return-value]
