"""How many present bits survive the SD backend's resize alone (no model): the accuracy a perfect
SD model could reach at a given image resolution.

usage: .venv/bin/python scripts/sd_resize_ceiling.py DATASET [RESOLUTION ...]   (default 32 512 1024)
DATASET: an encoded dataset (netdiffusion encode --packets 1024)."""

import sys

import cv2
import numpy as np

from netdiffusion.image import color_correct
from netdiffusion.model.data import load_flows
from netdiffusion.model.sd import flow_to_pixels

ROWS = 1024
dataset = sys.argv[1]
resolutions = [int(r) for r in sys.argv[2:]] or [32, 512, 1024]
flows = load_flows(dataset, packets=ROWS, max_flows_per_class=8, seed=0)
for res in resolutions:
    kept, zeros = [], []
    for i in range(len(flows)):
        m = flows.flow(i)
        u8 = ((flow_to_pixels(m, res, "paper", ROWS) + 1) * 127.5).round().astype(np.uint8)
        back, _ = color_correct(cv2.resize(u8, (m.shape[1], ROWS), interpolation=cv2.INTER_NEAREST), palette="paper")
        present = m != -1
        back = np.where(present, np.where(back[: len(m)] == -1, 0, back[: len(m)]), -1)
        kept.append((back[present] == m[present]).mean())
        zeros.append((m[present] == 0).mean())
    print(f"resolution {res}: present bits kept {np.mean(kept):.3f} (all-zeros guess {np.mean(zeros):.3f}); "
          f"{len(flows)} flows of {flows.lengths.min()}-{flows.lengths.max()} packets")
