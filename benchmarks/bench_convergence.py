"""Which convergence rule for the per-step solve: LAPs against the floor, and best val accuracy.

    PYTHONPATH=. python benchmarks/bench_convergence.py --work runs/convergence \
        --out benchmarks/results/convergence.md [--rules paper,1e-3,3e-3,1e-2] [--pairs 3]

The four MLP 512-512 scenarios of ``benchmarks/reproduce.py`` (digits and MNIST-1D 20k, random
and pre-trained inits), with its recipes and seed pairs. Every rule runs FGMT on the same
sources and targets; a rule is ``paper`` (absolute tol 1e-7, the official code's) or a
relative tol (stop when a sweep gains less than rtol x the objective). The floor is one LAP per
group per step. Runs are kept under --work, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from reproduce import RECIPES, SEED_PAIRS, trained, transferred  # noqa: E402

from raytraj import fs  # noqa: E402
from raytraj.transfer import TransferConfig  # noqa: E402

SCENARIOS = [  # name, dataset, pre-trained init, T
    ("digits, random init", "digits", False, 20),
    ("mnist1d 20k, random init", "mnist1d", False, 30),
    ("digits 0-4 -> 5-9, pre-trained", "digits", True, 20),
    ("mnist1d 0-4 -> 5-9, pre-trained", "mnist1d", True, 30),
]


def sources(work, dataset, pretrained, pair):
    """The source store and the target arguments of one scenario and seed pair (trained once)."""
    a, b = pair
    recipe = RECIPES[dataset]
    root = os.path.join(work, "sources", f"{dataset}-{'pre' if pretrained else 'rand'}", f"{a}-{b}")
    if not pretrained:
        return trained(os.path.join(root, "source"), dataset, a, **recipe).location, {"target_seed": b}
    low, high = f"{dataset}[0-4]", f"{dataset}[5-9]"
    trained(os.path.join(root, "pre-a"), low, a, **recipe)
    trained(os.path.join(root, "pre-b"), low, b, **recipe)
    src = trained(os.path.join(root, "source"), high, a, init=os.path.join(root, "pre-a"), new_head=True, **recipe)
    return src.location, {"target_init": os.path.join(root, "pre-b"), "new_head": True}


def rule_config(rule: str, steps: int) -> TransferConfig:
    """``paper``, ``RTOL``, or ``RTOL/capN``: at most N sweeps in every step but the last."""
    if rule == "paper":
        return TransferConfig(method="fgmt", steps=steps, seed=0, rtol=0.0, tol=1e-7)
    rtol, _, cap = rule.partition("/cap")
    return TransferConfig(method="fgmt", steps=steps, seed=0, rtol=float(rtol), step_sweeps=int(cap or 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/convergence")
    ap.add_argument("--out", default="benchmarks/results/convergence.md")
    ap.add_argument("--rules", default="paper,1e-3,3e-3,1e-2")
    ap.add_argument("--pairs", type=int, default=3, help="seed pairs per scenario")
    ap.add_argument("--sources-only", action="store_true", help="train the sources and stop")
    args = ap.parse_args()
    torch.set_num_threads(1)  # one thread: the LAP count and its share do not depend on a busy box's cores
    rules = args.rules.split(",")
    t0 = time.time()
    rows = {}  # (scenario, rule) -> list of metrics
    for name, dataset, pretrained, steps in SCENARIOS:
        for pair in SEED_PAIRS[: args.pairs]:
            src, target = sources(args.work, dataset, pretrained, pair)
            if args.sources_only:
                continue
            for rule in rules:
                out = os.path.join(args.work, "runs", f"{dataset}-{'pre' if pretrained else 'rand'}",
                                   f"{pair[0]}-{pair[1]}", rule.replace("/", "-"))
                m = transferred(src, out, rule_config(rule, steps), **target)
                rows.setdefault((name, rule), []).append(m)
    if args.sources_only:
        return
    lines = ["# Convergence rule of the per-step solve (FGMT, MLP 512-512)", "",
             f"Command: `PYTHONPATH=. python benchmarks/bench_convergence.py --work {args.work} --out {args.out} "
             f"--rules {args.rules} --pairs {args.pairs}` ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
             f"{os.cpu_count()} CPUs shared with other jobs, 1 torch thread).", "",
             "Scenarios and recipes as in `benchmarks/reproduce.py`; seed pairs "
             f"{', '.join(f'{a}-{b}' for a, b in SEED_PAIRS[: args.pairs])}; transfer seed 0, warm-started solves. "
             "`paper`: stop after a sweep gaining at most 1e-7 (absolute). A number: stop after a sweep gaining less "
             "than that fraction of the objective; `/capN` adds at most N sweeps in each step but the last (the descent goes "
             "on in the next step, the last runs to the rule). LAPs / floor: LAPs solved over one per group per step. "
             f"Δ best val: paired difference to `{rules[0]}` on the same source and target, mean±std over seed pairs.",
             "",
             "Timings are left out: on this shared machine the load changed several-fold between runs, and the LAP "
             "count is what the rule decides (every LAP is a 512x512 scipy solve, most of a step's solve time).", "",
             "| scenario | rule | LAPs / floor | sweeps / step | best val | Δ best val | unconverged steps |",
             "|---|---|---|---|---|---|---|"]
    summary = {rule: {"ratio": [], "delta": []} for rule in rules}
    for name, *_ in SCENARIOS:
        base = rows[(name, rules[0])]
        for rule in rules:
            ms = rows[(name, rule)]
            ratio = [m["solver"]["laps"] / m["solver"]["lap_floor"] for m in ms]
            delta = [m["best_val_acc"] - b["best_val_acc"] for m, b in zip(ms, base)]
            summary[rule]["ratio"] += ratio
            summary[rule]["delta"] += delta
            lines.append(
                f"| {name} | {rule} | {_ms(ratio, 2)} | {_ms([m['solver']['mean_sweeps'] for m in ms], 2)} | "
                f"{_ms([m['best_val_acc'] for m in ms])} | {_ms(delta)} | "
                f"{sum(len(m['solver']['unconverged_steps']) for m in ms)} |")
    lines += ["", "All scenarios together (12 runs per rule when --pairs 3):", "",
              "| rule | LAPs / floor | Δ best val (points) |", "|---|---|---|"]
    for rule in rules:
        lines.append(f"| {rule} | {_ms(summary[rule]['ratio'], 2)} | {_ms(summary[rule]['delta'], 2)} |")
    lines += ["", f"Wall time: {(time.time() - t0) / 60:.1f} min."]
    fs.atomic_write_bytes(args.out, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def _ms(values, digits=1):
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{statistics.mean(values):.{digits}f}±{statistics.stdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
