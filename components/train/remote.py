"""Entry point of the TrainJob pods: fetch data, ``netdiffusion train`` under torchrun, upload model.

Every node downloads the dataset; torchrun reads ``PET_NNODES``/``PET_NODE_RANK``/``PET_MASTER_ADDR``
/``PET_NPROC_PER_NODE`` set by the ``torch-distributed`` runtime; node rank 0 uploads the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from components.common import fetch, publish, setup_logging, stage_log


def torchrun_command(data: str, output: str, backend: str, config: str, seed: int) -> list[str]:
    """``torchrun -m netdiffusion train ...``: the CLI's train command, one process per GPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--module", "netdiffusion", "train",
           "--data", data, "--output", output, "--backend", backend, "--seed", str(seed)]
    if config:
        cmd += ["--config", config]
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-uri", required=True)
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--backend", default="native")
    parser.add_argument("--config", default="")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    with tempfile.TemporaryDirectory(prefix="trainjob-") as tmp:  # the data and model: uploaded, then removed
        scratch = Path(tmp)
        data = fetch(args.data_uri, scratch / "data")
        output = scratch / "model"
        rc = subprocess.call(torchrun_command(str(data), str(output), args.backend, args.config, args.seed))
        if rc != 0:
            logging.error("stage=train torchrun exited with %d", rc)
            return rc
        if os.environ.get("PET_NODE_RANK", "0") == "0":
            files = publish(output, args.model_uri)
            stage_log("train", uploaded=files, model=args.model_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
