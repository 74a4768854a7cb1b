"""netdiffusion: synthetic network traffic with diffusion models."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads (torch's intra-op pool, scikit-learn) that busy-wait between parallel regions
# starve when another process shares the cores: training on the 2-core machine ran at 0.6 steps/s
# instead of 9 next to a second torch process (1.4 s/step instead of 0.05 in a `make run`).
# Sleeping waits cost little when the machine is idle (docs/model.md). An explicit setting wins;
# it must be in the environment before torch loads its OpenMP runtime.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
