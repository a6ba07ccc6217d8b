"""Ray backend against the local backend, in one run on one machine.

    python benchmarks/bench_ray.py --out benchmarks/results/ray.md

GMT (T=20) with 1 and 2 Ray workers against local; FGMT with 1 worker against local (the Ray
overhead); the per-step breakdown into gradients, solves, evaluation, and what the driver ships.
All runs transfer the same MNIST-1D source (MLP 512-512) with the same seed, so they also
check that every backend gives the same permutations.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time

import ray
import torch

from raytraj import fs
from report import write_report
from raytraj.runfolder import RunFolder
from raytraj.train import train_from_args
from raytraj.trajectory import TrajectoryStore
from raytraj.ray_config import RayConfig
from raytraj.transfer import TransferConfig, prepare, transfer


def source(work: str) -> str:
    path = os.path.join(work, "source")
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args("mlp", "mnist1d", path, seed=1, epochs=30, lr=0.1, weight_decay=1e-4,
                        model_args={"hidden": [512, 512]}, progress=False)
    return path


def run(src, work, name, cfg, backend="local", **options):
    out = os.path.join(work, name)
    if fs.exists(out):
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    m = transfer(src, out, cfg, target_seed=2, backend=backend,
                 ray_config=RayConfig(**options) if options else None, progress=False)
    m["wall_s"] = time.perf_counter() - t0
    m["perm"] = RunFolder(out).perm()["final"]
    return m


def shipping(src, cfg):
    """What the Ray driver puts in the object store: once per run, and once per step."""
    problem = prepare(src, cfg, target_seed=2)
    once = {"data": problem.data, "spec": problem.spec, "target_init": problem.target_init,
            "trajectory end points": (problem.trajectory.point(0), problem.trajectory.point(problem.num_steps))}
    sizes = {k: len(pickle.dumps(v)) for k, v in once.items()}
    perm = {g: torch.randperm(n) for g, n in problem.spec.sizes.items()}
    t0 = time.perf_counter()
    for _ in range(20):
        ray.put(perm)
    return sizes, len(pickle.dumps(perm)), (time.perf_counter() - t0) / 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-ray")
    ap.add_argument("--out", default="benchmarks/results/ray.md")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    src = source(args.work)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    gmt = TransferConfig(method="gmt", steps=args.steps, grad_batches=2, seed=0)
    fgmt = TransferConfig(method="fgmt", steps=args.steps, grad_batches=2, seed=0)
    runs = {
        "GMT local": run(src, args.work, "gmt-local", gmt),
        "GMT ray, 1 worker": run(src, args.work, "gmt-ray1", gmt, "ray", workers=1),
        "GMT ray, 2 workers": run(src, args.work, "gmt-ray2", gmt, "ray", workers=2),
        "FGMT local": run(src, args.work, "fgmt-local", fgmt),
        "FGMT ray, 1 worker": run(src, args.work, "fgmt-ray1", fgmt, "ray", workers=1),
    }
    once, perm_bytes, perm_put_s = shipping(src, fgmt)
    ray.shutdown()
    base = {"GMT": runs["GMT local"], "FGMT": runs["FGMT local"]}
    lines = [
        "# Ray backend against the local backend", "",
        f"Command: `python benchmarks/bench_ray.py --out {args.out}` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}).", "",
        f"MNIST-1D (20k), MLP 512-512, T={args.steps}, grad_batches=2, val evaluated every step. "
        "Times in seconds; ratio = run wall time / local wall time of the same method (lower is faster).", "",
        "| run | wall s | ratio | setup s | grad s | solve s (LAP s) | eval s (blocked) | grad batches | same perm as local | same val curve |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in runs.items():
        ref = base[name.split()[0]]
        t = m["timing"]
        lines.append(
            f"| {name} | {m['wall_s']:.1f} | {m['wall_s'] / ref['wall_s']:.2f} | {t['setup_s']:.1f} | {t['grad_s']:.2f} | "
            f"{t['solve_s']:.2f} ({m['solver']['lap_s']:.2f}) | {t['eval_s']:.2f} | {m['grad_batches']} | "
            f"{m['perm'] == ref['perm']} | {m['val_acc'] == ref['val_acc']} |")
    steps = args.steps
    lines += ["", "Per step (mean over the T steps):", "",
              "| run | grad s/step | solve s/step | eval s/step |", "|---|---|---|---|"]
    for name, m in runs.items():
        t = m["timing"]
        lines.append(f"| {name} | {t['grad_s'] / steps:.3f} | {t['solve_s'] / steps:.3f} | {t['eval_s'] / steps:.3f} |")
    lines += ["", "What the driver ships: once per run "
              + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in once.items())
              + f"; per step only the permutation, {perm_bytes / 1e3:.1f} kB, put in {perm_put_s * 1e3:.2f} ms. "
              "Workers rebuild the transferred parameters from it.", "",
              "Where this 2-core machine limits the ratios: the driver's cost builds and LAPs, the workers' "
              "gradients and the evaluations all share 2 cores, so 2 workers cannot run twice as fast and the "
              "solve (single-threaded LAPs on the driver, parallel only across independent groups; this MLP's two "
              "groups share a tensor) dominates GMT here. The Ray columns also carry actor start-up (setup) and "
              "task round trips. On a cluster the gradient share scales with workers while the solve stays on "
              "the driver."]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
