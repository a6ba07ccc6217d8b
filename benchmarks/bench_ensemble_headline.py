"""The ensemble headline at MNIST-1D 200k: K transfers of one recorded source against K models
trained from scratch, with the full recipe and with the same total compute.

    PYTHONPATH=. python benchmarks/bench_ensemble_headline.py --work runs/ensemble-200k \
        --out runs/ensemble-200k/headline.md [--recipe fast] [--jobs 2]

(its output is the headline section of benchmarks/results/ensemble.md)

Compute is CPU seconds (``time.process_time`` of the process that did the work, one torch thread),
so it adds up across processes and holds on a busy machine. Every unit of work (a training, an
ensemble of transfers) is kept under --work with its CPU seconds, so an interrupted run resumes.

Per replicate r (0, 1, 2): the source is the full-recipe model of seed 1+r. The full-recipe
ensemble of K is the K pool models of seeds 1+r, ..., K+r (consecutive replicates share models,
so their spread understates the seed spread of that row). The transfer ensemble is
``raytraj ensemble --recipe R`` from that source; its compute counts the source's training. The
equal-compute ensemble trains K models of fresh seeds for the epochs that make its total compute
that of the transfer ensemble (cosine schedule over the shorter run, as any training here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import ray
import torch

sys.path.insert(0, os.path.dirname(__file__))
from report import write_report  # noqa: E402

from raytraj import cli, fs  # noqa: E402
from raytraj.data import load_data  # noqa: E402
from raytraj.evaluation import predict  # noqa: E402
from raytraj.models import build_model  # noqa: E402
from raytraj.trajectory import TrajectoryStore  # noqa: E402
from raytraj.train import train_from_args  # noqa: E402
from raytraj.recipes import ENSEMBLE_RECIPES  # noqa: E402

DATA = "mnist1d:200000"
MODEL = {"hidden": [512, 512]}
RECIPE = dict(epochs=30, lr=0.1, weight_decay=1e-4)
REPLICATES = 3
KS = (4, 8)
POOL = max(KS) + REPLICATES - 1  # full-recipe seeds 1..POOL


def kept_training(path: str, train, **info) -> tuple[str, float]:
    """``train(path)`` once, timed in CPU seconds (kept beside the store as PATH.cpu.json with ``info``);
    later calls return the kept store and seconds."""
    cpu_file = path + ".cpu.json"
    if os.path.exists(cpu_file) and TrajectoryStore(path).complete:
        return path, json.load(open(cpu_file))["cpu_s"]
    shutil.rmtree(path, ignore_errors=True)  # an interrupted training: its CPU seconds were not all counted
    torch.set_num_threads(1)
    t0 = time.process_time()
    train(path)
    cpu = time.process_time() - t0
    fs.atomic_write_json(cpu_file, {"cpu_s": cpu, **info})
    return path, cpu


def trained(work: str, seed: int, epochs: int, init: str | None = None) -> tuple[str, float]:
    """Train (once) the MLP of ``seed`` for ``epochs`` with the recipe, from a random init or from
    the last step of the store ``init``; its store and CPU seconds."""
    folder = f"train-e{epochs}" if init is None else f"from-{os.path.basename(init)}-e{epochs}"
    return kept_training(os.path.join(work, folder, f"seed-{seed}"), lambda path: train_from_args(
        "mlp", DATA, path, seed=seed, model_args=MODEL, progress=False, init=init, **{**RECIPE, "epochs": epochs}),
        seed=seed, epochs=epochs)


def test_probs(path: str, x_test: torch.Tensor) -> np.ndarray:
    store = TrajectoryStore(path)
    return predict(build_model(store.model_config(), 0), store.read(store.last_step), x_test).numpy()


def ensemble_acc(probs: list[np.ndarray], labels: np.ndarray) -> float:
    return 100.0 * float((np.mean(probs, axis=0).argmax(1) == labels).mean())


def transfer_ensemble(work: str, r: int, source: str, recipe: str, members: int, targets: list[str] | None = None,
                      out: str | None = None, extra: list[str] = ()) -> dict:
    """``raytraj ensemble`` (once) from ``source``: onto random inits, or onto the pre-trained ``targets``
    with new heads, with the options ``extra`` added to the recipe's; its ensemble.json."""
    out = out or os.path.join(work, f"transfer-{recipe}", f"rep-{r}")
    result_file = os.path.join(out, "ensemble.json")
    if os.path.exists(result_file):
        return json.load(open(result_file))
    shutil.rmtree(out, ignore_errors=True)  # CPU seconds of a half-run ensemble are not all counted
    argv = ["ensemble", "--source", source, "--out", out, "--members", str(members), "--recipe", recipe,
            "--max-concurrent", "2"]
    if targets:
        argv += ["--targets", ",".join(targets), "--new-head"]
    argv += list(extra)
    if cli.main(argv) != 0:
        raise SystemExit(f"raytraj {' '.join(argv)} failed")
    return json.load(open(result_file))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/ensemble-200k")
    ap.add_argument("--out", default="runs/ensemble-200k/headline.md")
    ap.add_argument("--recipe", default="fast")
    ap.add_argument("--jobs", type=int, default=2, help="trainings (Ray tasks of 1 CPU) at once")
    ap.add_argument("--train-only", help="only train these full-recipe seeds, e.g. 1-5 (to fill the pool)")
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    if args.train_only:
        lo, _, hi = args.train_only.partition("-")
        for seed in range(int(lo), int(hi or lo) + 1):
            path, cpu = trained(work, seed, RECIPE["epochs"])
            print(f"seed {seed}: {cpu:.1f} CPU s -> {path}", flush=True)
        return
    t_start, load0 = time.time(), os.getloadavg()[0]
    ray.init(address="local", num_cpus=args.jobs, include_dashboard=False)
    train_task = ray.remote(num_cpus=1)(trained)

    def train_all(jobs: list[tuple[int, int]], init: str | None = None) -> list[tuple[str, float]]:
        return ray.get([train_task.remote(work, seed, epochs, init) for seed, epochs in jobs])

    pool = dict(zip(range(1, POOL + 1), train_all([(s, RECIPE["epochs"]) for s in range(1, POOL + 1)])))
    data = load_data(TrajectoryStore(pool[1][0]).data_config())
    x_test, labels = data.x["test"], data.y["test"].numpy()
    pool_probs = {s: test_probs(path, x_test) for s, (path, _) in pool.items()}
    epoch_cpu = statistics.mean(cpu for _, cpu in pool.values()) / RECIPE["epochs"]

    rows = {k: {"full": [], "transfer": [], "equal": [], "short": [], "restart": []} for k in KS}
    short_epochs = ENSEMBLE_RECIPES[args.recipe].finetune_epochs
    for r in range(REPLICATES):
        source = 1 + r
        ens = transfer_ensemble(work, r, pool[source][0], args.recipe, max(KS))
        member_cpu = [m["cpu_s"] for m in ens["members"]]
        for k in KS:
            full_seeds = range(source, source + k)
            rows[k]["full"].append({"acc": ensemble_acc([pool_probs[s] for s in full_seeds], labels),
                                    "cpu": sum(pool[s][1] for s in full_seeds)})
            budget = pool[source][1] + sum(member_cpu[:k])  # recording the source counts
            rows[k]["transfer"].append({"acc": ens["ensemble_acc_by_size"][k - 1], "cpu": budget,
                                        "member": statistics.mean(m["test_acc"] for m in ens["members"][:k])})
            epochs = max(1, round(budget / k / epoch_cpu))
            equal = train_all([(2000 + 100 * r + i, epochs) for i in range(k)])
            rows[k]["equal"].append({"acc": ensemble_acc([test_probs(p, x_test) for p, _ in equal], labels),
                                     "cpu": sum(cpu for _, cpu in equal), "epochs": epochs})
            if short_epochs:  # what the members' subsequent training alone gives, from random inits
                short = train_all([(3000 + 100 * r + i, short_epochs) for i in range(k)])
                rows[k]["short"].append({"acc": ensemble_acc([test_probs(p, x_test) for p, _ in short], labels),
                                         "cpu": sum(cpu for _, cpu in short), "epochs": short_epochs})
                # ... and from the source itself, with K batch orders: an ensemble of warm restarts
                restart = train_all([(4000 + i, short_epochs) for i in range(k)], init=pool[source][0])
                rows[k]["restart"].append({"acc": ensemble_acc([test_probs(p, x_test) for p, _ in restart], labels),
                                           "cpu": pool[source][1] + sum(cpu for _, cpu in restart),
                                           "epochs": short_epochs})
    ray.shutdown()
    write_report(args.out, report(args, rows, pool, epoch_cpu, t_start, load0))


def report(args, rows, pool, epoch_cpu, t_start, load0) -> list[str]:
    recipe = ENSEMBLE_RECIPES[args.recipe]
    short_epochs = recipe.finetune_epochs
    lines = [
        "# The ensemble headline: MNIST-1D 200k, MLP 512-512", "",
        f"Command: `PYTHONPATH=. python benchmarks/bench_ensemble_headline.py --work {args.work} --out {args.out} "
        f"--recipe {args.recipe} --jobs {args.jobs}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs shared with other jobs, load "
        f"average {load0:.1f} at the start; {(time.time() - t_start) / 60:.0f} min of wall time for what was not "
        "already kept under --work).", "",
        f"Full recipe: {RECIPE['epochs']} epochs, SGD lr {RECIPE['lr']} (cosine), weight decay "
        f"{RECIPE['weight_decay']}, batch 128; a training costs {statistics.mean(c for _, c in pool.values()):.0f} "
        f"CPU s on average ({epoch_cpu:.1f} per epoch). Transfer members: `raytraj ensemble --recipe {args.recipe}` "
        f"({', '.join(f'{k} {v}' for k, v in recipe.options().items())}), 2 concurrent Tune trials of 1 CPU. "
        "Compute is CPU seconds, the transfer ensemble's including the source's training. Test accuracy (%) on "
        "the 40,000 test samples; mean ± std over the 3 replicates (sources of seeds 1, 2, 3).", "",
        "| K | ensemble | test acc | mean member | CPU s | % of full-recipe compute | epochs per model |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, by in rows.items():
        full_cpu = statistics.mean(x["cpu"] for x in by["full"])
        for name, label in (("full", "trained from scratch, full recipe"),
                            ("transfer", f"FGMT transfers of one source (`--recipe {args.recipe}`)"),
                            ("equal", "trained from scratch, same compute as the transfers"),
                            ("short", "trained from scratch for the members' epochs only (no transfer, no source)"),
                            ("restart", "the source itself trained on for the members' epochs, K batch orders")):
            xs = by[name]
            if not xs:
                continue
            cpu = statistics.mean(x["cpu"] for x in xs)
            member = _ms([x["member"] for x in xs], 2) if "member" in xs[0] else ""
            if name == "full":
                epochs = str(RECIPE["epochs"])
            elif name in ("transfer", "restart"):
                epochs = f"+{short_epochs}" if short_epochs else ""
            else:
                epochs = "/".join(str(x["epochs"]) for x in xs)
            lines.append(f"| {k} | {label} | {_ms([x['acc'] for x in xs], 2)} | {member} | {cpu:.0f} | "
                         f"{100 * cpu / full_cpu:.1f}% | {epochs} |")
    return lines


def _ms(values, digits=1):
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 \
        else f"{values[0]:.{digits}f}"


if __name__ == "__main__":
    main()
