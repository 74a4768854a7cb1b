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
KERNELS: list = []  # every kernel defined so far (``warm_up`` is tested to reach them all)


def kernel(fn: F) -> F:
    """Compile ``fn`` in nopython mode (no Python objects inside), cached, releasing the GIL."""
    compiled = numba.njit(cache=_CACHE, nogil=True)(fn)
    KERNELS.append(compiled)
    return compiled  # type: ignore[return-value]


def warm_up(flows: int = 24, packets: int = 32) -> float:
    """Compile (or load from the disk cache) every kernel; returns the CPU seconds it took.

    Repairs a few flows of random rows end to end (rules, packet bytes, pcap files; zero and random
    payloads), which reaches every repair kernel with the argument types real runs use, and calls
    the field helpers encode / decode / evaluate use. Container images run it at build time so that
    a pipeline step starts with compiled code (``python -m netdiffusion.jit``); a test checks that
    it reaches every kernel."""
    import tempfile
    import time
    from pathlib import Path

    import numpy as np

    from netdiffusion.dataset import write_fields, write_shard
    from netdiffusion.fields import Layout, bytes_to_bits, present_bytes, row_counts
    from netdiffusion.repair import repair_dataset
    from netdiffusion.repair.noise import random_packets

    started = time.process_time()
    layout = Layout()
    rows = random_packets(layout, flows, packets, seed=0)
    with tempfile.TemporaryDirectory(prefix="netdiffusion-jit-") as tmp:
        data = Path(tmp) / "data"
        write_fields(data, layout)
        write_shard(rows, data / "part.parquet")
        repair_dataset(data, Path(tmp) / "zero", progress=False, merged=True)
        repair_dataset(data, Path(tmp) / "random", progress=False, payload="random")
    # a connection retried after a refusal and a SACK option (random rows hold neither): the
    # kernels that renumber attempts and check SACK blocks, with the argument types repair passes
    from netdiffusion.repair.tcp import tcp_attempt_numbers, tcp_sack_rules

    one = np.zeros(2, dtype=np.int64)
    tcp_attempt_numbers(one, np.arange(2, dtype=np.int64), one, one, one, one, one, 1, one)
    tcp_sack_rules(np.full((2, 40), -1, dtype=np.int16), np.zeros((2, 40), dtype=np.uint8), one, one, one, 5, 1, 1)
    row_counts(rows.nprint[:4] != 0)
    layout.presence(rows.nprint[:4])  # (decode / evaluate: which headers rows carry)
    present_bytes(rows.nprint[:4, :64])
    bytes_to_bits(np.zeros((4, 8), dtype=np.uint8), np.full(4, 8, dtype=np.int64))
    return time.process_time() - started


if __name__ == "__main__":
    print(f"repair kernels ready in {warm_up():.1f} CPU-s (cache: {numba.config.CACHE_DIR or 'next to the package'})")
