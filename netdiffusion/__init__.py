"""netdiffusion: synthetic network traffic with diffusion models."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's intra-op pool, scikit-learn) busy-wait between parallel regions, and
# starve when another process shares the cores: next to a second torch process on the 2-core
# machine, training ran at 0.6-0.8 steps/s instead of 5-9, and a `make run` step took 1.4 s
# instead of 0.05. Spinning briefly before sleeping keeps most of the idle speed (docs/model.md,
# "CPU threads"). An explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT wins; either must be in the
# environment before torch loads its OpenMP runtime, which is why this is set on import.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "1000")
