"""Evaluation of generated traffic: statistical fidelity, flow statistics, ML utility, variation,
memorisation, and a readable report. Entry point: :func:`evaluate`."""

from netdiffusion.evaluate.core import DEFAULT_PACKETS_K, evaluate
from netdiffusion.evaluate.metrics import distances, hellinger, jsd, tvd

__all__ = ["DEFAULT_PACKETS_K", "distances", "evaluate", "hellinger", "jsd", "tvd"]
