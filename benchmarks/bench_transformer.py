"""Learning transfer and weight matching on the zoo transformer (issue 12), small enough for a CPU.

    python benchmarks/bench_transformer.py --work runs/bench-transformer --out benchmarks/results/transformer.md

On a busy machine, run the two scenarios side by side first (``--only random``, ``--only pretrained``),
then the command above, which finds their runs under --work and adds the barrier and the report.

Model: transformer width 32, 4 heads of 8 dims, depth 2, MLP ratio 2, MNIST-1D as 10 patches of 4.
Data: mnist1d with DATA samples. For each seed pair (a, b):
  random init:      sources trained from seeds a and b; the trajectory of a moves onto init b.
  pre-trained init: pre-trained on classes 0-4 from seeds a and b; a is fine-tuned on 5-9 with a new
                    head, and that fine-tuning moves onto pre-trained b (with its own new head).
Naive, GMT, FGMT and Oracle run with a cosine schedule of T steps; the table reports val accuracy
(peak and final) and test accuracy at the best step. The barrier section interpolates the two
independently trained random-init models of every pair, with and without weight matching.
Every run is kept under --work, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import torch
import torch.nn.functional as F

from raytraj import fs
from raytraj.data import load_data
from raytraj.models import build_model
from raytraj.perm import PermutationSpec, apply_permutation, check_spec, infer_spec, match
from raytraj.runfolder import RunFolder
from raytraj.train import train_from_args
from raytraj.trajectory import TrajectoryStore
from raytraj.transfer import TransferConfig, problem, transfer

METHODS = ["naive", "gmt", "fgmt", "oracle"]
MODEL = {"width": 32, "heads": 4, "depth": 2, "mlp_ratio": 2}
RECIPE = dict(epochs=20, lr=0.05, weight_decay=5e-4)
# FGMT with part of the symmetry: each variant keeps these kinds of groups (the rest stay unpermuted).
ABLATION = {
    "fgmt: MLP units": {"mlp"},
    "fgmt: + residual stream": {"mlp", "residual"},
    "fgmt: + heads": {"mlp", "residual", "heads"},
}


def restrict(spec: PermutationSpec, keep: set[str]) -> PermutationSpec:
    """``spec`` with only the groups of the kinds in ``keep``: heads, within (head dims), residual, mlp."""
    outer = {e[0] for entry in spec.axes.values() for e in entry if isinstance(e, tuple)}
    inner = {e[1] for entry in spec.axes.values() for e in entry if isinstance(e, tuple)}
    residual = spec.axes["head.weight"][1]

    def kind(g):
        return "heads" if g in outer else "within" if g in inner else "residual" if g == residual else "mlp"

    def entry(e):
        if isinstance(e, tuple):
            e = tuple(g if g is not None and kind(g) in keep else None for g in e)
            return None if e == (None, None) else e
        return e if e is None or kind(e) in keep else None

    axes = {name: tuple(entry(e) for e in a) for name, a in spec.axes.items()}
    sizes = {g: n for g, n in spec.group_sizes.items() if kind(g) in keep}
    return PermutationSpec(axes, spec.shapes, group_sizes=sizes)


@contextlib.contextmanager
def restricted_specs(keep: set[str]):
    """Transfers in this block use ``restrict(inferred spec, keep)`` (the benchmark's ablation only)."""
    original = problem.infer_checked_spec
    problem.infer_checked_spec = lambda cfg, data: restrict(original(cfg, data), keep)
    try:
        yield
    finally:
        problem.infer_checked_spec = original


def trained(path, data, seed, **kw):
    if not (fs.exists(fs.join(path, "trajectory.json")) and TrajectoryStore(path).complete):
        train_from_args("transformer", data, path, seed=seed, model_args=MODEL, progress=False, **{**RECIPE, **kw})
    return TrajectoryStore(path)


def transferred(src, out, cfg, **kw):
    return RunFolder(out).load_or_run(lambda resume: transfer(src, out, cfg, resume=resume, progress=False, **kw))


def scenario(work, data, pairs, pretrained, steps):
    rows = []
    for a, b in pairs:
        root = os.path.join(work, "pretrained" if pretrained else "random", f"{a}-{b}")
        if pretrained:
            low, high = f"{data}[0-4]", f"{data}[5-9]"
            trained(os.path.join(root, "pre-a"), low, a)
            trained(os.path.join(root, "pre-b"), low, b)
            src = trained(os.path.join(root, "source"), high, a, init=os.path.join(root, "pre-a"), new_head=True)
            tgt = trained(os.path.join(root, "target"), high, 0, init=os.path.join(root, "pre-b"), new_head=True)
            target = {"target_init": os.path.join(root, "pre-b"), "new_head": True}
        else:
            src = trained(os.path.join(root, "source"), data, a)
            tgt = trained(os.path.join(root, "target"), data, b)
            target = {"target_seed": b}
        runs = {}
        for method in METHODS:
            cfg = TransferConfig(method=method, steps=steps, seed=0)
            runs[method] = transferred(src.location, os.path.join(root, method), cfg,
                                       oracle_target=tgt.location if method == "oracle" else None, **target)
        for label, keep in ABLATION.items():
            with restricted_specs(keep):
                runs[label] = transferred(src.location, os.path.join(root, label.replace(": ", "-").replace(" ", "_")),
                                          TransferConfig(method="fgmt", steps=steps, seed=0), **target)
        rows.append({"pair": (a, b), "runs": runs, "target_val": tgt.meta["val_acc"][-1],
                     "source_val": src.meta["val_acc"][-1]})
    return rows


def barrier(work, data, pairs, points=11):
    """Test loss and accuracy along (1 - l) * A + l * B, with B as trained and B permuted onto A."""
    dataset = load_data(data)
    rows = []
    for a, b in pairs:
        root = os.path.join(work, "random", f"{a}-{b}")
        store_a, store_b = TrajectoryStore(os.path.join(root, "source")), TrajectoryStore(os.path.join(root, "target"))
        theta_a, theta_b = store_a.read(store_a.last_step), store_b.read(store_b.last_step)
        model = build_model(store_a.model_config(), 0)
        x, y = dataset.x["test"], dataset.y["test"]
        spec = infer_spec(model, dataset.x["train"][:8])
        check_spec(model, spec, dataset.x["train"][:8])
        t0 = time.perf_counter()
        perm, info = match(spec, [(theta_a, theta_b)], seed=0)
        match_s = time.perf_counter() - t0
        row = {"pair": (a, b), "match_s": match_s, "sweeps": info["sweeps"]}
        for label, theta_end in (("identity", theta_b), ("weight matching", apply_permutation(spec, perm, theta_b))):
            losses, accs = [], []
            for i in range(points):
                lam = i / (points - 1)
                state = {k: (1 - lam) * theta_a[k] + lam * theta_end[k] for k in theta_a}
                model.load_state_dict(state)
                model.eval()
                with torch.no_grad():
                    logits = model(x)
                losses.append(float(F.cross_entropy(logits, y)))
                accs.append(100.0 * float((logits.argmax(1) == y).float().mean()))
            ends = [(1 - i / (points - 1)) * losses[0] + i / (points - 1) * losses[-1] for i in range(points)]
            row[label] = {"loss_barrier": max(l - e for l, e in zip(losses, ends)),
                          "acc_mid": accs[points // 2], "acc_min": min(accs), "acc_ends": (accs[0], accs[-1])}
        rows.append(row)
    return rows


def mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f}±{statistics.stdev(values):.2f}"


def scenario_table(title, rows, steps):
    lines = [f"### {title} (T={steps}, {len(rows)} seed pairs, %, mean±std)", "",
             "| method | peak val | final val | test at best step | transfer s |", "|---|---|---|---|---|"]
    for method in [*METHODS, *ABLATION]:
        rs = [r["runs"][method] for r in rows]
        lines.append(f"| {method} | {mean_std([m['best_val_acc'] for m in rs])} | "
                     f"{mean_std([m['final_val_acc'] for m in rs])} | {mean_std([m['test_acc'] for m in rs])} | "
                     f"{mean_std([m['timing']['total_s'] for m in rs])} |")
    lines.append(f"| source, trained (final val) | | {mean_std([r['source_val'] for r in rows])} | | |")
    lines.append(f"| target, trained with the source's recipe (final val) | | "
                 f"{mean_std([r['target_val'] for r in rows])} | | |")
    lines += ["", "Per pair, final val: " + "; ".join(
        f"{r['pair'][0]}-{r['pair'][1]}: " + ", ".join(f"{m} {r['runs'][m]['final_val_acc']:.1f}" for m in METHODS)
        for r in rows), ""]
    return lines


def barrier_table(rows):
    lines = [f"### Interpolation between two independently trained transformers ({len(rows)} pairs, test set)", "",
             "| endpoint B | loss barrier | acc at midpoint | min acc on path |", "|---|---|---|---|"]
    for label in ("identity", "weight matching"):
        rs = [r[label] for r in rows]
        lines.append(f"| {label} | {mean_std([r['loss_barrier'] for r in rs])} | "
                     f"{mean_std([r['acc_mid'] for r in rs])} | {mean_std([r['acc_min'] for r in rs])} |")
    ends = [r["identity"]["acc_ends"] for r in rows]
    lines += ["", "Endpoint test accuracy (A, B): " + "; ".join(f"{x:.1f}, {y:.1f}" for x, y in ends),
              f"Weight matching: {mean_std([r['match_s'] for r in rows])} s, "
              f"{mean_std([float(r['sweeps']) for r in rows])} sweeps.", ""]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-transformer")
    ap.add_argument("--out", default="benchmarks/results/transformer.md")
    ap.add_argument("--data", default="mnist1d:8000")
    ap.add_argument("--pairs", type=int, default=3, help="seed pairs (101-102, 201-202, ...)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", choices=["random", "pretrained"],
                    help="run one scenario (two processes can share --work); without it, all and the report")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    pairs = [(100 * i + 1, 100 * i + 2) for i in range(1, args.pairs + 1)]
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.only:
        scenario(args.work, args.data, pairs, args.only == "pretrained", args.steps)
        return
    random_rows = scenario(args.work, args.data, pairs, False, args.steps)
    pre_rows = scenario(args.work, args.data, pairs, True, args.steps)
    barrier_rows = barrier(args.work, args.data, pairs)
    lines = ["## Transformer: learning transfer and weight matching", "",
             f"Command: `python benchmarks/bench_transformer.py --data {args.data} --pairs {args.pairs} "
             f"--steps {args.steps}` ({time.perf_counter() - t0:.0f} s for what was not already under --work).",
             f"Model: transformer {MODEL}, patch 4 (10 tokens); recipe {RECIPE}, batch 128; transfers with the "
             "cosine schedule, one batch of 128 per gradient, warm-started solves.", ""]
    lines += scenario_table(f"Random init, {args.data}", random_rows, args.steps)
    lines += scenario_table(f"Pre-trained init, {args.data}[0-4] -> [5-9]", pre_rows, args.steps)
    lines += barrier_table(barrier_rows)
    text = "\n".join(lines) + "\n"
    fs.atomic_write_bytes(args.out, text.encode())
    print(text)


if __name__ == "__main__":
    main()
