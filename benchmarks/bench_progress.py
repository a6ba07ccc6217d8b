"""Size of a transfer's progress file, and wall time, against the number of steps T.

    python benchmarks/bench_progress.py SOURCE_STORE

Naive transfers (no gradients, no solves) with ``eval_every=0``, so the time is mostly the
per-step checkpoint. Run it on two checkouts (PYTHONPATH=...) to compare them.
"""

import os
import sys
import tempfile
import time

import raytraj
from raytraj.runfolder import RunFolder
from raytraj.transfer import TransferConfig, transfer
from raytraj.transfer.checkpointing import PROGRESS


def main(src: str) -> None:
    for steps in (200, 1500):
        out = os.path.join(tempfile.mkdtemp(prefix="bench-progress-"), "run")
        t0 = time.perf_counter()
        transfer(src, out, TransferConfig(method="naive", steps=steps, eval_every=0), target_seed=5, progress=False)
        wall = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(RunFolder(out).state_dir, PROGRESS))
        print(f"{os.path.dirname(os.path.dirname(raytraj.__file__))} T={steps} wall_s={wall:.1f} "
              f"progress_bytes={size}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
