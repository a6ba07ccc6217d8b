"""Ensembles where the transfer might pay: a CNN on Fashion-MNIST, from random inits and over pre-trained targets.

    PYTHONPATH=. python benchmarks/bench_ensemble_fmnist.py --data fashion-mnist:6000 --work runs/ens-fmnist \
        --out benchmarks/results/ensemble-fmnist.md [--members 8 --replicates 3 --recipe fast --jobs 2]

(needs `apt-get install dataset-fashion-mnist`, or --data fashion-mnist:PATH:N)

Random inits, per replicate r (source = the full-recipe model of seed 1+r), K members each of:
  full      K trainings from scratch with the full recipe (seeds 1+r .. K+r)
  transfer  `raytraj ensemble --recipe R` from the source (its compute counts the source's training)
  restart   the source trained on for the recipe's epochs with K batch orders (warm restarts)
  equal     K trainings from scratch for the epochs that cost what the transfer ensemble costs

Pre-trained targets (classes 0-4 -> 5-9, new head), per replicate r: K+1 models pre-trained on 0-4; the source
fine-tunes pre-trained model 1+r on 5-9, and:
  full      each of the K other pre-trained models fine-tuned with the full recipe
  transfer  `raytraj ensemble --targets <the K others> --new-head --recipe R`: the one fine-tuning moved onto each
  restart   the fine-tuned source trained on for the recipe's epochs with K batch orders
  equal     each of the K others fine-tuned for the epochs the transfer ensemble costs
The pre-training is not counted: the K pre-trained models are what the scenario starts from.

Compute is CPU seconds (``time.process_time`` of the process doing the work, one torch thread). Reported:
ensemble test accuracy, mean member accuracy, NLL and ECE (15 bins) of the mean softmax, and the members'
mean pairwise disagreement (share of test images where two members' top-1 differ).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import sys
import time

import numpy as np
import ray
import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_ensemble_headline import kept_training, test_probs, transfer_ensemble  # noqa: E402
from report import write_report  # noqa: E402

from raytraj import cli  # noqa: E402
from raytraj.data import load_data  # noqa: E402
from raytraj.recipes import ENSEMBLE_RECIPES  # noqa: E402
from raytraj.train import train_from_args  # noqa: E402
from raytraj.trajectory import TrajectoryStore  # noqa: E402
from raytraj.tune.trial import load_probs  # noqa: E402


def trained(work: str, spec: dict, data: str, seed: int, epochs: int, init: str | None = None,
            new_head: bool = False) -> tuple[str, float]:
    """Train (once) ``spec``'s model on ``data`` for ``epochs``, from a random init or from the last step of
    the store ``init`` (``new_head``: re-initialise its classifier); its store and CPU seconds."""
    tag = "".join(c if c.isalnum() else "_" for c in data)
    folder = f"{tag}-e{epochs}" + ("" if init is None else f"-from-{os.path.basename(os.path.dirname(init))}-"
                                   f"{os.path.basename(init)}")
    return kept_training(os.path.join(work, folder, f"seed-{seed}"), lambda path: train_from_args(
        spec["model"], data, path, seed=seed, model_args=spec["model_args"], progress=False, init=init,
        new_head=new_head, **{**spec["recipe"], "epochs": epochs}), seed=seed, epochs=epochs)


def scores(probs: list[np.ndarray], labels: np.ndarray) -> dict:
    """Ensemble accuracy, mean member accuracy, NLL, ECE and pairwise disagreement of K members' test probs."""
    mean = np.mean(probs, axis=0)
    conf, pred = mean.max(1), mean.argmax(1)
    bins = np.minimum((conf * 15).astype(int), 14)
    ece = sum(abs(float((pred[bins == b] == labels[bins == b]).mean()) - float(conf[bins == b].mean()))
              * float((bins == b).mean()) for b in range(15) if (bins == b).any())
    tops = [p.argmax(1) for p in probs]
    return {"acc": 100.0 * float((pred == labels).mean()),
            "member": statistics.mean(100.0 * float((t == labels).mean()) for t in tops),
            "nll": float(-np.log(np.maximum(mean[np.arange(len(labels)), labels], 1e-12)).mean()),
            "ece": 100.0 * ece,
            "disagree": 100.0 * statistics.mean(float((a != b).mean()) for a, b in itertools.combinations(tops, 2))
            if len(tops) > 1 else 0.0}


def run_part(args, spec: dict, pretrained: bool, train_all) -> dict:
    k, reps = args.members, args.replicates
    epochs = spec["recipe"]["epochs"]
    short = ENSEMBLE_RECIPES[args.recipe].finetune_epochs
    data = f"{args.data}[5-9]" if pretrained else args.data
    pool_seeds = range(1, k + reps + 1)
    if pretrained:
        pre = dict(zip(pool_seeds, train_all([(spec["pretrain"], s, epochs, None, False) for s in pool_seeds])))
    rows = {name: [] for name in ("full", "transfer", "restart", "equal")}
    costs = []
    for r in range(reps):
        src_seed = 1 + r
        if pretrained:
            source, source_cpu = train_all([(data, src_seed, epochs, pre[src_seed][0], True)])[0]
            others = [s for s in pool_seeds if s != src_seed][:k]
            full = train_all([(data, 0, epochs, pre[s][0], True) for s in others])
            targets = [pre[s][0] for s in others]
        else:
            full = train_all([(data, s, epochs, None, False) for s in range(src_seed, src_seed + k)])
            source, source_cpu = full[0]
            targets = []
        test = load_data(TrajectoryStore(source).data_config())
        x_test, labels = test.x["test"], test.y["test"].numpy()
        epoch_cpu = statistics.mean(c for _, c in full) / epochs
        # the options are part of the folder's name: a kept ensemble made with other options is not reused
        opts = "".join(c if c.isalnum() else "_" for c in " ".join(args.options)).strip("_")
        ens_dir = os.path.join(args.work, f"transfer-{'pre' if pretrained else 'rand'}-{args.recipe}"
                               + (f"-{opts}" if opts else "") + f"-rep{r}")
        ens = transfer_ensemble(args.work, r, source, args.recipe, k, targets, out=ens_dir, extra=args.options)
        member_dirs = [os.path.join(ens_dir, "members", f"member-{i:03d}") for i in range(k)]
        probs = [load_probs(d, "test") for d in member_dirs]
        costs.append(member_costs(ens, member_dirs, full, source_cpu))
        budget = source_cpu + sum(m["cpu_s"] for m in ens["members"])
        budget_epochs = max(1, round(budget / k / epoch_cpu))
        restart = train_all([(data, 4000 + i, short, source, False) for i in range(k)])
        costs[-1]["restart"] = statistics.mean(c for _, c in restart)
        if pretrained:
            equal = train_all([(data, 2000 + 100 * r, budget_epochs, pre[s][0], True) for s in others])
        else:
            equal = train_all([(data, 2000 + 100 * r + i, budget_epochs, None, False) for i in range(k)])
        for name, members, cpu, ep in (
                ("full", [p for p, _ in full], sum(c for _, c in full), epochs),
                ("transfer", None, budget, f"+{short}"),
                ("restart", [p for p, _ in restart], source_cpu + sum(c for _, c in restart), f"+{short}"),
                ("equal", [p for p, _ in equal], sum(c for _, c in equal), budget_epochs)):
            p = probs if members is None else [test_probs(m, x_test) for m in members]
            rows[name].append({**scores(p, labels), "cpu": cpu, "epochs": ep})
    return {"rows": rows, "costs": costs}


def member_costs(ens: dict, member_dirs: list[str], full: list, source_cpu: float) -> dict:
    """One replicate's CPU seconds per member: a full fine-tune, a transfer member (its trial) and the
    transfer's own share of it, split as the transfer's metrics split it."""
    timings = [json.load(open(os.path.join(d, "metrics.json")))["timing"] for d in member_dirs]
    return {"full": statistics.mean(c for _, c in full), "source": source_cpu,
            "member": statistics.mean(m["cpu_s"] for m in ens["members"]),
            **{part: statistics.mean(t[f"{part}_cpu_s"] if part != "transfer" else t["cpu_s"] for t in timings)
               for part in ("transfer", "grad", "eval", "solve", "setup", "finish")}}


def report(args, spec, results, t_start, load0) -> list[str]:
    lines = ["# Ensembles on Fashion-MNIST (CNN)", "",
             f"Command: `PYTHONPATH=. {shlex.join(['python', *sys.argv])}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch "
             f"{torch.__version__}, {os.cpu_count()} CPUs shared with other jobs, load average {load0:.1f} at the "
             f"start; {(time.time() - t_start) / 60:.0f} min for what was not already kept under --work).", "",
             f"Model `{spec['model']}` {spec['model_args']}, recipe {spec['recipe']}. Test %, NLL, ECE % and "
             "disagreement % of the mean softmax; mean ± std over the replicates; CPU s as in the docstring.", "",
             "| scenario | ensemble | test acc | mean member | NLL | ECE | disagreement | CPU s | epochs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for scenario, part in results.items():
        for name, xs in part["rows"].items():
            lines.append(f"| {scenario} | {name} | " + " | ".join(
                _ms([x[m] for x in xs], 3 if m == "nll" else 2) for m in ("acc", "member", "nll", "ece", "disagree"))
                + f" | {statistics.mean(x['cpu'] for x in xs):.0f} | {'/'.join(str(x['epochs']) for x in xs)} |")
    lines += ["", "CPU s per member (mean over members and replicates): `full` a fine-tune (or training) with the "
              "full recipe; `member` a transfer member's whole trial (transfer, subsequent training, scoring of "
              "every split); `transfer` its transfer alone, split into gradients, evaluation (BatchNorm "
              "recalibration and val at the evaluated steps), LAP solves, setup and finish (test accuracy of the "
              "best and last steps); `restart` one warm restart.", "",
              "| scenario | source | full | member | transfer | grad | eval | solve | setup | finish | restart |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario, part in results.items():
        c = part["costs"]
        lines.append(f"| {scenario} | " + " | ".join(
            f"{statistics.mean(x[key] for x in c):.1f}" for key in
            ("source", "full", "member", "transfer", "grad", "eval", "solve", "setup", "finish", "restart")) + " |")
    return lines


def _ms(values, digits):
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 \
        else f"{values[0]:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist:6000")
    ap.add_argument("--model", default="conv")
    ap.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="default: width=0.25 batch_norm=true")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--recipe", default="fast", choices=list(ENSEMBLE_RECIPES))
    ap.add_argument("--parts", default="rand,pre")
    ap.add_argument("--ensemble-options", default="", metavar="OPTIONS",
                    help="more options of `raytraj ensemble`, in one string, e.g. \"--grad-batches 1 --bn-batches 2\"")
    ap.add_argument("--jobs", type=int, default=2, help="trainings (Ray tasks of 1 CPU) at once")
    ap.add_argument("--work", default="runs/ens-fmnist")
    ap.add_argument("--out", default="runs/ens-fmnist/ensemble-fmnist.md")
    args = ap.parse_args()
    args.work = os.path.abspath(args.work)
    args.options = shlex.split(args.ensemble_options)
    model_args = cli._key_values(args.model_arg) if args.model_arg else {"width": 0.25, "batch_norm": True}
    spec = {"model": args.model, "model_args": model_args, "pretrain": f"{args.data}[0-4]",
            "recipe": {"epochs": args.epochs, "lr": args.lr, "weight_decay": 5e-4, "warmup_epochs": 1}}
    t_start, load0 = time.time(), os.getloadavg()[0]
    ray.init(address="local", num_cpus=args.jobs, include_dashboard=False)
    task = ray.remote(num_cpus=1)(trained)

    def train_all(jobs):
        return ray.get([task.remote(args.work, spec, *job) for job in jobs])

    results = {}
    for part in args.parts.split(","):
        pretrained = part == "pre"
        results["pre-trained 0-4 → 5-9" if pretrained else "random init"] = run_part(args, spec, pretrained,
                                                                                     train_all)
    ray.shutdown()
    write_report(args.out, report(args, spec, results, t_start, load0))


if __name__ == "__main__":
    main()
