"""Scale-out transfer: driver traffic per step (old design against the sharded one) and wall time
against workers, on a local multi-node ``ray.cluster_utils`` cluster.

    python benchmarks/bench_scale.py --out benchmarks/results/scale.md

1. Traffic, 2 workers: MLP-512 (MNIST-1D) FGMT T=30, and ResNet-20 (digits, width 1) GMT T=10.
   "new" is what this backend's meter counted (payload bytes: tensors and arrays, 8 per scalar,
   100 per object reference, 300 per remote call). "old" is the previous design's flow, counted
   the same way from the same runs: per step the float64 gradient sums of both models for every
   pair and batch split came into the driver, plus the permutation put once. It leaves out the
   cost matrices the old design shipped to its LAP tasks, so the ratio is if anything generous to it.
2. Wall time against 1, 2 and 4 workers for a gradient-heavy GMT setting (wide MLP, grad_batches=8 of 1024),
   with gradient, solve and evaluation time and the workers' busy share.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import ray
import torch
from ray.cluster_utils import Cluster

from raytraj import fs
from raytraj.distributed.backend import CALL_BYTES
from raytraj.runfolder import RunFolder
from raytraj.train import train_from_args
from raytraj.trajectory import TrajectoryStore
from report import write_report
from raytraj.ray_config import RayConfig
from raytraj.transfer import TransferConfig, transfer


def source(work, name, model, data, epochs, **model_args):
    path = os.path.join(work, name)
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args(model, data, path, seed=1, epochs=epochs, model_args=model_args, progress=False)
    return path


def run(src, work, name, cfg, workers=None):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ray_config = RayConfig(workers=workers, cpus_per_worker=1) if workers else None
    m = transfer(src, out, cfg, target_seed=2, backend="ray" if workers else "local", ray_config=ray_config,
                 progress=False)
    m["wall_s"] = time.perf_counter() - t0
    m["perm"] = RunFolder(out).perm()["final"]
    return m


def old_driver_bytes(m, cfg, workers, params, perm_ints):
    """Per step, what the previous RayBackend moved through the driver (see the module docstring)."""
    out = []
    for s in range(1, m["steps"] + 1):
        pairs = s if cfg.method == "gmt" else 1
        splits = 1 if pairs >= workers else max(1, min(cfg.grad_batches, -(-workers // pairs)))
        calls = pairs * splits
        out.append(calls * (2 * params * 8 + CALL_BYTES) + perm_ints * 8 + CALL_BYTES)
    return out


def traffic_rows(work, workers):
    rows = []
    mlp = source(work, "mlp512", "mlp", "mnist1d", 3, hidden=[512, 512])
    resnet = source(work, "resnet20", "resnet20", "digits", 1, width=1.0)
    for label, src, cfg in [
        ("MLP-512 FGMT T=30", mlp, TransferConfig(method="fgmt", steps=30, seed=0, eval_every=0)),
        ("ResNet-20 GMT T=10", resnet, TransferConfig(method="gmt", steps=10, seed=0, eval_every=0, bn_batches=2)),
    ]:
        m = run(src, work, f"traffic-{label.split()[0]}", cfg, workers)
        state = TrajectoryStore(src).read(0)
        params = sum(v.numel() for v in state.values() if v.is_floating_point())
        perm_ints = sum(len(p) for p in m["perm"].values())
        new, wb = m["traffic"]["driver_bytes"], m["traffic"]["worker_bytes"]
        old = old_driver_bytes(m, cfg, workers, params, perm_ints)
        rows.append((label, params, sum(old) / len(old), sum(new) / len(new), max(new), sum(new) / sum(old),
                     sum(wb) / len(wb)))
    return rows


def scaling_rows(work, steps, counts):
    src = source(work, "mlp-wide", "mlp", "mnist1d", 2, hidden=[1024, 1024])
    cfg = TransferConfig(method="gmt", steps=steps, grad_batches=8, batch_size=1024, seed=0, eval_every=0)
    runs = {"local": run(src, work, "scale-local", cfg)}
    for n in counts:
        runs[f"ray, {n} workers"] = run(src, work, f"scale-ray{n}", cfg, n)
    return runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-scale")
    ap.add_argument("--out", default="benchmarks/results/scale.md")
    ap.add_argument("--steps", type=int, default=5, help="T of the wall-time runs")
    ap.add_argument("--workers", default="1,2,4")
    args = ap.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Two nodes of 2 logical CPUs each: up to 4 one-CPU workers, spread over both.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        t0 = time.time()
        traffic = traffic_rows(args.work, 2)
        scaling = scaling_rows(args.work, args.steps, counts)
        took = time.time() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    lines = [
        "# Scale-out transfer: driver traffic and wall time against workers", "",
        f"Command: `python benchmarks/bench_scale.py --out {args.out} --steps {args.steps} --workers {args.workers}` "
        f"({time.strftime('%Y-%m-%d')}, {took / 60:.0f} min; a shared machine with {os.cpu_count()} cores, busy "
        f"with other jobs; torch {torch.__version__}, ray {ray.__version__}). A two-node `ray.cluster_utils` "
        "cluster with 2 logical CPUs per node on those cores.", "",
        "## Driver traffic per step, 2 workers", "",
        "| transfer | parameters | old design, bytes/step | new, bytes/step (mean) | new, max | new / old | "
        "among workers, bytes/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, params, old, new, new_max, ratio, wb in traffic:
        lines.append(f"| {label} | {params:,} | {old:,.0f} | {new:,.0f} | {new_max:,} | {100 * ratio:.2f}% | "
                     f"{wb:,.0f} |")
    lines += ["", "## Wall time against workers", "",
              f"GMT T={args.steps}, MNIST-1D, MLP 1024-1024, grad_batches=8 of 1024 samples (so step s has 8s "
              "gradient units per model), val evaluated at the last step only. Seconds. grad = the reduce-scattered "
              "gradients, "
              "solve = the distributed sweeps, busy = mean share of wall time each worker computed; "
              "comm+sched = grad + solve - the busiest worker's compute.", "",
              "| run | wall s | ratio to local | setup s | grad s | solve s | eval s | workers busy | comm+sched s | "
              "same perm as local |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    base = scaling["local"]
    for name, m in scaling.items():
        t = m["timing"]
        tr = m.get("traffic")
        busy = f"{100 * sum(tr['busy_s']) / (len(tr['busy_s']) * m['wall_s']):.0f}%" if tr else "-"
        comm = f"{t['grad_s'] + t['solve_s'] - max(tr['busy_s']):.1f}" if tr else "-"
        lines.append(f"| {name} | {m['wall_s']:.1f} | {m['wall_s'] / base['wall_s']:.2f} | {t['setup_s']:.1f} | "
                     f"{t['grad_s']:.1f} | {t['solve_s']:.1f} | {t['eval_s']:.1f} | {busy} | {comm} | "
                     f"{m['perm'] == base['perm']} |")
    write_report(args.out, lines)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"traffic": traffic, "scaling": {k: {"wall_s": v["wall_s"], "timing": v["timing"],
                                                       "traffic": v.get("traffic")} for k, v in scaling.items()}},
                  f, indent=1)


if __name__ == "__main__":
    main()
