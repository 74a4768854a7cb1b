"""Compiled kernels (netdiffusion/jit.py): the warm-up container images run reaches every one."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, pkgutil, importlib
import netdiffusion
from netdiffusion import jit
# every module of the library that defines kernels, whether or not repair imports it
for m in pkgutil.walk_packages(netdiffusion.__path__, "netdiffusion."):
    if m.name.split(".")[-1] in ("__main__", "cli") or ".serve" in m.name or ".model" in m.name:
        continue
    importlib.import_module(m.name)
seconds = jit.warm_up()
print(json.dumps({"kernels": len(jit.KERNELS), "seconds": seconds,
                  "cold": [k.py_func.__module__ + "." + k.py_func.__qualname__
                           for k in jit.KERNELS if not k.signatures]}))
"""


@pytest.mark.slow  # compiles every kernel: ~30 CPU-s
def test_warm_up_compiles_every_kernel() -> None:
    # a fresh process that compiles (no disk cache: a kernel loaded from it does not register the
    # kernels it calls), so kernels other tests compiled here cannot hide one the warm-up misses
    env = {**os.environ, "NETDIFFUSION_NO_JIT_CACHE": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kernels"] >= 10
    assert result["cold"] == [], f"kernels warm_up never calls (images would compile them per step): {result['cold']}"
