"""Is repair a fixed point? Repair a dataset's rows, repair the output again, and report what the
second pass still changes (bits per rule, flows touched, and the first few such flows).

Repaired rows are valid traffic, and "real traffic changes no bit", so a second pass should change
nothing; where it does, the first pass left something its own rules reject (e.g. a FIN the gap
closing moved before data of the same direction). Session 8 found it does on TCP flows; see
docs/repair.md "Limits".

usage: .venv/bin/python scripts/repair_idempotence.py DATASET [--prefix FLOW_ID_PREFIX]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from netdiffusion.dataset import read_layout, read_packets
from netdiffusion.repair import repair_matrix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--prefix", default="", help="only flows whose id starts with this")
    args = ap.parse_args()
    layout, data = read_layout(args.dataset), read_packets(args.dataset)
    if args.prefix:
        data = data.take(np.flatnonzero(np.char.startswith(data.flow_id.astype(str), args.prefix)))
    data = data.take(np.lexsort((data.packet_index, data.flow_id)))
    names, flow = np.unique(data.flow_id, return_inverse=True)
    first = repair_matrix(layout, data.nprint, flow.reshape(-1), data.timestamp)
    second = repair_matrix(layout, first.matrix, first.flow, data.timestamp[first.keep])
    changed = {rule: v for rule, v in second.bits.items() if v.any()}
    touched = np.unique(second.flow[np.any(np.stack(list(changed.values())), axis=0)]) if changed else []
    print(json.dumps({"packets": len(data), "flows": len(names),
                      "first_pass_bits": {r: int(v.sum()) for r, v in first.bits.items() if v.any()},
                      "second_pass_bits": {r: int(v.sum()) for r, v in changed.items()},
                      "second_pass_flows": len(touched),
                      "examples": [str(names[f]) for f in touched[:5]]}, indent=2))


if __name__ == "__main__":
    main()
