"""Transfer cost against training cost, before and after the cheap-solve changes, in CPU seconds.

    PYTHONPATH=. python benchmarks/bench_cost.py --work runs/cost --out benchmarks/results/cost.md [--samples 20000]

One process, one torch thread, CPU time (``time.process_time``) so that a busy shared machine
slows the wall clock but not the ratios. For MNIST-1D at each --samples it trains the MLP 512-512
source with the reproduce.py recipe (30 epochs), then runs FGMT T=30 on it:

* before: the official stopping rule (absolute tol 1e-7), val evaluated at every step;
* the relative rule (rtol 1e-3) solving every step to it, val at every step on a 1000-sample subset;
* the defaults (rtol 1e-3, at most 3 sweeps in every step but the last), the same evaluation;
* the defaults with val only at the last step (the old cost table's setting).

A short untimed transfer runs first, so that no timed run pays the process's one-time imports.

It also times the LAP solvers on the CPU (scipy against the torch auction) on random matrices.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from reproduce import RECIPES, MODEL  # noqa: E402

from raytraj import fs  # noqa: E402
from raytraj.perm import solve_laps_auction, solve_laps_serial  # noqa: E402
from raytraj.train import train_from_args  # noqa: E402
from raytraj.trajectory import TrajectoryStore  # noqa: E402
from raytraj.transfer import TransferConfig, transfer  # noqa: E402

VARIANTS = {
    "before (tol 1e-7, full val every step)": dict(rtol=0.0, step_sweeps=0),
    "rtol 1e-3, uncapped steps, val subset 1000 every step": dict(val_subset=1000, step_sweeps=0),
    "defaults (rtol 1e-3, step_sweeps 3), val subset 1000 every step": dict(val_subset=1000),
    "defaults, eval only at the last step": dict(eval_every=0),
}


def cpu_timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def lap_rows(sizes, reps=2):
    rows = []
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        mats = [torch.randn(n, n, generator=g, dtype=torch.float64) for _ in range(reps)]
        _, scipy_s = cpu_timed(lambda: solve_laps_serial([m.numpy() for m in mats]))
        _, auction_s = cpu_timed(lambda: solve_laps_auction(mats))
        rows.append(f"| {n} | {scipy_s / reps * 1e3:.1f} | {auction_s / reps * 1e3:.1f} | {auction_s / scipy_s:.0f}x |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/cost")
    ap.add_argument("--out", default="benchmarks/results/cost.md")
    ap.add_argument("--samples", default="20000", help="comma-separated MNIST-1D sizes")
    ap.add_argument("--lap-sizes", default="64,128")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.time()
    lines = ["# Cost: transfer against training (MNIST-1D, MLP 512-512, FGMT T=30)", "",
             f"Command: `PYTHONPATH=. python benchmarks/bench_cost.py --work {args.work} --out {args.out} "
             f"--samples {args.samples} --lap-sizes {args.lap_sizes}` ({time.strftime('%Y-%m-%d %H:%M')} UTC, "
             f"torch {torch.__version__}, 1 torch thread, {os.cpu_count()} CPUs shared with other jobs: load average "
             f"{os.getloadavg()[0]:.1f} at the start). Times are CPU seconds of this process (`time.process_time`), "
             "so the ratios hold on a busy machine; every ratio compares runs of this one invocation.", "",
             "| samples | run | transfer CPU s | / source training CPU s | LAPs / floor | best val | grad s | solve s "
             "| eval s |", "|---|---|---|---|---|---|---|---|---|"]
    for n in [int(s) for s in args.samples.split(",")]:
        root = os.path.join(args.work, f"mnist1d-{n}")
        shutil.rmtree(root, ignore_errors=True)  # CPU times are only comparable within one invocation
        _, train_cpu = cpu_timed(lambda: train_from_args("mlp", f"mnist1d:{n}", os.path.join(root, "source"), seed=1,
                                                         model_args=MODEL, progress=False, **RECIPES["mnist1d"]))
        src = TrajectoryStore(os.path.join(root, "source"))
        lines.append(f"| {n} | source training, {RECIPES['mnist1d']['epochs']} epochs | {train_cpu:.1f} | 1 | | "
                     f"{src.meta['val_acc'][-1]:.1f} | | | |")
        transfer(src.location, os.path.join(root, "warm-up"), TransferConfig(steps=2, eval_every=0), target_seed=2,
                 progress=False)
        for i, (name, kw) in enumerate(VARIANTS.items()):
            cfg = TransferConfig(method="fgmt", steps=30, seed=0, **kw)
            m, cpu = cpu_timed(lambda: transfer(src.location, os.path.join(root, f"fgmt-{i}"), cfg, target_seed=2,
                                                progress=False))
            t = m["timing"]
            lines.append(f"| {n} | FGMT {name} | {cpu:.1f} | {cpu / train_cpu:.2f} | "
                         f"{m['solver']['laps']}/{m['solver']['lap_floor']} = {m['solver']['laps_per_floor']:.2f} | "
                         f"{m['best_val_acc']:.1f} | {t['grad_s']:.1f} | {t['solve_s']:.1f} | {t['eval_s']:.1f} |")
    lines += ["", "grad, solve and eval s are the transfer's own wall-clock split (from metrics.json), shown for the "
              "shares only. Best val of the eval-off run is the last step's (the only one evaluated).", "",
              "LAP solvers on the CPU (random float64 matrices, ms per matrix, CPU time):", "",
              "| n | scipy | torch auction | auction / scipy |", "|---|---|---|---|"]
    lines += lap_rows([int(s) for s in args.lap_sizes.split(",")])
    lines += ["", "On the CPU scipy wins by far, so `--lap auto` keeps scipy there; the auction is for cost matrices "
              "that live on a GPU (not measured here: no GPU in this session).", "",
              f"Wall time: {(time.time() - t_all) / 60:.1f} min."]
    fs.atomic_write_bytes(args.out, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
