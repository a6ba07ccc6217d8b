"""Ensembles from one trajectory against ensembles trained from scratch, in one run.

    python benchmarks/bench_ensemble.py --out benchmarks/results/ensemble.md

MNIST-1D (20k), MLP 512-512. One source is trained and recorded; K = 4 and 8 members are FGMT
transfers of it to K random inits (Ray Tune trials), scored as a mean-softmax ensemble on test.
The baseline trains K models from scratch with the source's recipe on the same machine. The
throughput part runs the same 4 transfers with 1 and with 2 concurrent trials.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np
import ray
import torch

from raytraj import fs
from report import write_report
from raytraj.data import load_data
from raytraj.evaluation import predict
from raytraj.models import build_model
from raytraj.train import train_from_args
from raytraj.trajectory import TrajectoryStore
from raytraj.transfer import TransferConfig
from raytraj.tune import run_ensemble

RECIPE = dict(epochs=30, lr=0.1, weight_decay=1e-4)
MODEL = {"hidden": [512, 512]}


def trained(path, seed):
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args("mlp", "mnist1d", path, seed=seed, model_args=MODEL, progress=False, **RECIPE)
    return TrajectoryStore(path)


def scratch_ensemble(work, k, data):
    """K models trained from scratch (seeds 1000..): their test probs, and the seconds it took."""
    t0 = time.perf_counter()
    probs = []
    for i in range(k):
        store = trained(os.path.join(work, "scratch", f"m{i}"), 1000 + i)
        model = build_model(store.model_config(), 0)
        probs.append(predict(model, store.read(store.last_step), data.x["test"]).numpy())
    return probs, time.perf_counter() - t0


def ensemble(src, work, name, k, cfg, concurrent, finetune_epochs=0):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    return run_ensemble(src, out, members=k, cfg=cfg, max_concurrent=concurrent, finetune_epochs=finetune_epochs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-ensemble")
    ap.add_argument("--out", default="benchmarks/results/ensemble.md")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    shutil.rmtree(os.path.join(args.work, "scratch"), ignore_errors=True)  # scratch training is timed
    src = trained(os.path.join(args.work, "source"), 1)
    source_s = src.meta["total_s"]
    data = load_data(src.data_config())
    labels = data.y["test"].numpy()
    # The scratch baseline runs first, before Ray's processes share the cores.
    scratch_probs, scratch_s = scratch_ensemble(args.work, 8, data)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
    cfg = TransferConfig(method="fgmt", steps=args.steps, eval_every=0)
    results = {k: ensemble(src.location, args.work, f"ens{k}", k, cfg, concurrent=2) for k in (4, 8)}
    ft = ensemble(src.location, args.work, "ens4-ft", 4, cfg, concurrent=2, finetune_epochs=3)
    serial = ensemble(src.location, args.work, "ens4-serial", 4, cfg, concurrent=1)
    ray.shutdown()

    def acc(probs):
        return 100.0 * float((np.mean(probs, axis=0).argmax(1) == labels).mean())

    lines = [
        "# Ensembles from one trajectory", "",
        f"Command: `python benchmarks/bench_ensemble.py --out {args.out}` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}).", "",
        f"MNIST-1D (20k), MLP 512-512, recipe {RECIPE}. Members: FGMT, T={args.steps}, eval off, 2 concurrent "
        f"Tune trials of 1 CPU. Source training took {source_s:.1f}s (val {src.meta['val_acc'][-1]:.1f}%, "
        f"test {src.meta['test_acc']:.1f}%). Accuracies are test %.", "",
        "| ensemble | K | ensemble acc | mean member | by size k=1..K | wall s | wall / K scratch trainings |",
        "|---|---|---|---|---|---|---|",
    ]
    scratch_per_model = scratch_s / 8
    for k, r in results.items():
        lines.append(f"| FGMT transfers | {k} | {r['ensemble_test_acc']:.2f} | {r['mean_member_test_acc']:.2f} | "
                     + " ".join(f"{a:.1f}" for a in r["ensemble_acc_by_size"])
                     + f" | {r['timing']['wall_s']:.1f} | {r['timing']['wall_s'] / (k * scratch_per_model):.2f} |")
    lines.append(f"| FGMT + 3 epochs of training | 4 | {ft['ensemble_test_acc']:.2f} | {ft['mean_member_test_acc']:.2f} | "
                 + " ".join(f"{a:.1f}" for a in ft["ensemble_acc_by_size"])
                 + f" | {ft['timing']['wall_s']:.1f} | {ft['timing']['wall_s'] / (4 * scratch_per_model):.2f} |")
    for k in (4, 8):
        by = [acc(scratch_probs[:i]) for i in range(1, k + 1)]
        member = float(np.mean([100.0 * (p.argmax(1) == labels).mean() for p in scratch_probs[:k]]))
        lines.append(f"| trained from scratch | {k} | {by[-1]:.2f} | {member:.2f} | " + " ".join(f"{a:.1f}" for a in by)
                     + f" | {scratch_per_model * k:.1f} | 1.00 |")
    per_min = {c: 4 / (r["timing"]["wall_s"] / 60) for c, r in ((1, serial), (2, results[4]))}
    lines += ["", "Throughput of 4 FGMT transfers as Tune trials:", "",
              "| concurrent trials | wall s | transfers per minute | summed trial s |", "|---|---|---|---|",
              f"| 1 | {serial['timing']['wall_s']:.1f} | {per_min[1]:.1f} | {serial['timing']['trial_s_sum']:.1f} |",
              f"| 2 | {results[4]['timing']['wall_s']:.1f} | {per_min[2]:.1f} | {results[4]['timing']['trial_s_sum']:.1f} |",
              "", "Scratch training runs sequentially with both cores; transfer trials hold 1 CPU each. On this 2-core "
              "machine 2 concurrent trials can at most double throughput, and Tune's trial start-up is part of "
              "every wall time."]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
