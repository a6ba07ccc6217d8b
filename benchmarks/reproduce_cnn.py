"""CNN rows of the reproduction: Conv8 (with and without BatchNorm), a 3-conv CNN and ResNet-20 on digits,
and on Fashion-MNIST (real images, `--data fashion-mnist:N`).

    python benchmarks/reproduce_cnn.py --work runs/reproduce-cnn --out benchmarks/results/reproduce-cnn.md
    python benchmarks/reproduce_cnn.py --data fashion-mnist:6000 --models conv8,conv8-bn \
        --work runs/fmnist-cnn --out benchmarks/results/reproduce-cnn-fmnist.md

The Fashion-MNIST part (needs `apt-get install dataset-fashion-mnist`, or fashion-mnist:PATH:N) also trains on
from FGMT, Naive and the target init for 2 epochs, records per-layer init and displacement norms, and runs
the --init-decay and official-solver probes of the BatchNorm failure (FM_RUNS).

Both scenarios of benchmarks/reproduce.py (random init; pre-trained on digits 0-4, fine-tuned on 5-9 with a
new head), 3 seed pairs, Naive / GMT / FGMT / Oracle, T=10, one batch of 128 per gradient. Widths are cut
(Conv8 x0.25, ResNet-20 x0.5) so that the whole table fits a 2-core machine. Besides the transfers it
measures two references per pair that bound what any permutation can do here:

  wm-interp  the val accuracy of the midpoint between the trained target and the trained source
             weight-matched to it (the quality a weight-matched, interpolated model has);
  planted    FGMT onto a *permuted copy of the source's own init*: the right permutation exists and
             reproduces the source exactly, so a shortfall here is a bug, not the method's limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from reproduce import mean_std, trained, transferred  # noqa: E402

from report import write_report  # noqa: E402

from raytraj import fs  # noqa: E402
from raytraj.data import load_data  # noqa: E402
from raytraj.analysis import interpolate_models  # noqa: E402
from raytraj.models import build_model  # noqa: E402
from raytraj.perm import apply_permutation, infer_spec, perm_from_lists, random_permutation  # noqa: E402
from raytraj.runfolder import RunFolder  # noqa: E402
from raytraj.trajectory import TrajectoryStore, TrajectoryWriter  # noqa: E402
from raytraj.transfer import TransferConfig  # noqa: E402
from raytraj.transfer.finetune import finetune  # noqa: E402

SEED_PAIRS = [(101, 102), (201, 202), (301, 302)]
METHODS = ["naive", "fgmt", "gmt", "oracle"]
RECIPE = dict(epochs=10, lr=0.05, weight_decay=5e-4, warmup_epochs=2)
MODELS = {  # name: (zoo model, options, recipe changes)
    "conv8-bn": ("conv", {"width": 0.25, "batch_norm": True}),
    "conv8": ("conv", {"width": 0.25}, {"lr": 0.02}),  # without BatchNorm, lr 0.05 leaves some seeds at chance
    "conv3-bn": ("conv", {"channels": [32, 64, 128], "pool_after": [0, 1], "fc": [128], "batch_norm": True}),
    "resnet20": ("resnet20", {"width": 0.5}),
}
STEPS = 10


def midpoint_accuracy(target: TrajectoryStore, source: TrajectoryStore, out: str) -> float:
    """Val accuracy halfway between the trained target and the weight-matched trained source."""
    if not fs.exists(fs.join(out, "interpolate.json")):
        interpolate_models(f"{target.location}:{target.last_step}", f"{source.location}:{source.last_step}", out,
                           points=3, align="weights", progress=False)
    return fs.read_json(fs.join(out, "interpolate.json"))["val_acc"][1]


def _data(store: TrajectoryStore):
    return load_data(store.data_config())


def planted_init(source: TrajectoryStore, out: str) -> str:
    """A store whose only step is the source's init under a random permutation."""
    if fs.exists(fs.join(out, "trajectory.json")) and TrajectoryStore(out).complete:
        return out
    data = _data(source)
    model = build_model(source.model_config(), 0)
    spec = infer_spec(model, data.x["train"][:8])
    init = apply_permutation(spec, random_permutation(spec, torch.Generator().manual_seed(7)), source.read(0))
    writer = TrajectoryWriter.create(out, source.meta, init, source.param_names)
    writer.write(0, init, {})
    writer.finish()
    return out


def run_model(work: str, key: str, pretrained: bool) -> list[dict]:
    model, args, *changes = MODELS[key]
    kw = dict(model=model, model_args=args, **{**RECIPE, **(changes[0] if changes else {})})
    rows = []
    for a, b in SEED_PAIRS:
        root = os.path.join(work, key + ("_pre" if pretrained else "_rand"), f"{a}-{b}")
        if pretrained:
            pre_a = trained(os.path.join(root, "pre-a"), "digits[0-4]", a, **kw).location
            pre_b = trained(os.path.join(root, "pre-b"), "digits[0-4]", b, **kw).location
            src = trained(os.path.join(root, "source"), "digits[5-9]", a, init=pre_a, new_head=True, **kw)
            tgt = trained(os.path.join(root, "target"), "digits[5-9]", 0, init=pre_b, new_head=True, **kw)
            target = {"target_init": pre_b, "new_head": True}
        else:
            src = trained(os.path.join(root, "source"), "digits", a, **kw)
            tgt = trained(os.path.join(root, "target"), "digits", b, **kw)
            target = {"target_seed": b}
        runs = {}
        for method in METHODS:
            cfg = TransferConfig(method=method, steps=STEPS, seed=0)
            runs[method] = transferred(src.location, os.path.join(root, method), cfg,
                                       oracle_target=tgt.location if method == "oracle" else None, **target)
        planted = planted_init(src, os.path.join(root, "planted-init"))
        runs["planted"] = transferred(src.location, os.path.join(root, "planted"),
                                      TransferConfig(method="fgmt", steps=STEPS, seed=0), target_init=planted,
                                      new_head=False)
        rows.append({"runs": runs, "source_val": src.meta["val_acc"][-1], "target_val": tgt.meta["val_acc"][-1],
                     "wm_interp": midpoint_accuracy(tgt, src, os.path.join(root, "wm-interp"))})
        print(f"{key} {'pre' if pretrained else 'rand'} {a}-{b}: " + ", ".join(
            f"{m} {r['best_val_acc']:.1f}" for m, r in runs.items()), flush=True)
    return rows


def table(results: dict) -> list[str]:
    lines = ["| model | scenario | Naive | GMT | FGMT | Oracle | FGMT / Oracle | wm-interp midpoint | planted FGMT "
             "| source | trained target |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (key, pretrained), rows in results.items():
        best = {m: [r["runs"][m]["best_val_acc"] for r in rows] for m in (*METHODS, "planted")}
        ratio = statistics.mean(best["fgmt"]) / max(1e-9, statistics.mean(best["oracle"]))
        lines.append(
            f"| {key} | {'pre-trained' if pretrained else 'random init'} | {mean_std(best['naive'])} | "
            f"{mean_std(best['gmt'])} | {mean_std(best['fgmt'])} | {mean_std(best['oracle'])} | {ratio:.2f} | "
            f"{mean_std([r['wm_interp'] for r in rows])} | {mean_std(best['planted'])} | "
            f"{mean_std([r['source_val'] for r in rows])} | {mean_std([r['target_val'] for r in rows])} |")
    return lines


# --- Fashion-MNIST (real images): the paper's scenarios, subsequent training, and the BatchNorm failure measured ---

FM_RECIPE = dict(epochs=5, lr=0.05, weight_decay=5e-4, warmup_epochs=1)
FM_MODELS = {  # name: (zoo model, options, recipe changes)
    "conv8": ("conv", {"width": 0.25}, {"lr": 0.02}),  # the paper's Conv8: no BatchNorm
    "conv8-bn": ("conv", {"width": 0.25, "batch_norm": True}, {}),
    "resnet20": ("resnet20", {"width": 0.25}, {}),
}
FM_FT_EPOCHS = 2
# name: (method, TransferConfig changes). The paper's four, then item-3 probes: the source's init decay carried
# (--init-decay), and the official code's solver (cold starts, absolute stopping rule, no per-step cap).
FM_RUNS = {"naive": ("naive", {}), "fgmt": ("fgmt", {}), "gmt": ("gmt", {}), "oracle": ("oracle", {}),
           "fgmt-decay": ("fgmt", {"init_decay": True}), "oracle-decay": ("oracle", {"init_decay": True}),
           "naive-decay": ("naive", {"init_decay": True}),
           "fgmt-official": ("fgmt", {"warm_start": False, "rtol": 0.0, "step_sweeps": 0})}


def layer_norms(store: TrajectoryStore) -> list[dict]:
    """Per weight tensor: |theta^0|, |theta^T - theta^0| / |theta^0|, and c = <theta^T, theta^0> / |theta^0|^2
    (the share of its init the trained tensor keeps; what --init-decay carries over)."""
    start, end = store.read(0), store.read(store.last_step)
    rows = []
    for name in store.param_names:
        if not name.endswith("weight") or start[name].dim() < 2:
            continue  # BatchNorm scales and biases start at 1 and 0
        a, b = start[name].double(), end[name].double()
        rows.append({"name": name, "init": float(a.norm()), "disp": float((b - a).norm() / a.norm()),
                     "share": float((a * b).sum() / (a * a).sum()), "final": float(b.norm())})
    return rows


def displacement_cosines(src: TrajectoryStore, tgt: TrajectoryStore, oracle_run: str) -> dict[str, float]:
    """Per weight tensor: cos(θ2^T − θ2^0, π(θ1^T − θ1^0)) under the Oracle's permutation: how much of the trained
    target's displacement the best weight-matched source displacement reproduces."""
    data = _data(src)
    spec = infer_spec(build_model(src.model_config(), 0), data.x["train"][:8])
    perm = perm_from_lists(RunFolder(oracle_run).perm()["final"])
    s0, s1, t0, t1 = src.read(0), src.read(src.last_step), tgt.read(0), tgt.read(tgt.last_step)
    moved = apply_permutation(spec, perm, {k: s1[k] - s0[k] for k in src.param_names})
    out = {}
    for name in src.param_names:
        if name.endswith("weight") and s0[name].dim() >= 2:
            a, b = (t1[name] - t0[name]).flatten().double(), moved[name].flatten().double()
            out[name] = float(a @ b / (a.norm() * b.norm() + 1e-30))
    return out


def fm_pair(work: str, data: str, key: str, pretrained: bool, a: int, b: int, runs: list[str],
            ft_starts: list[str], existing: bool = False) -> dict:
    """One seed pair of one scenario: trainings, transfers, subsequent training, norms; ``existing``: only what
    is already under ``work`` (no new transfers or subsequent trainings)."""
    model, args, changes = FM_MODELS[key]
    recipe = {**FM_RECIPE, **changes}
    kw = dict(model=model, model_args=args, **recipe)
    root = os.path.join(work, key + ("_pre" if pretrained else "_rand"), f"{a}-{b}")
    if pretrained:
        pre_a = trained(os.path.join(root, "pre-a"), f"{data}[0-4]", a, **kw).location
        pre_b = trained(os.path.join(root, "pre-b"), f"{data}[0-4]", b, **kw).location
        src = trained(os.path.join(root, "source"), f"{data}[5-9]", a, init=pre_a, new_head=True, **kw)
        tgt = trained(os.path.join(root, "target"), f"{data}[5-9]", 0, init=pre_b, new_head=True, **kw)
        target = {"target_init": pre_b, "new_head": True}
        standard = dict(data=f"{data}[5-9]", seed=0, init=pre_b, new_head=True)
    else:
        src = trained(os.path.join(root, "source"), data, a, **kw)
        tgt = trained(os.path.join(root, "target"), data, b, **kw)
        target = {"target_seed": b}
        standard = dict(data=data, seed=b)
    out = {}
    for name in runs:
        if existing and not os.path.exists(os.path.join(root, name, "metrics.json")):
            continue
        method, changes = FM_RUNS[name]
        cfg = TransferConfig(method=method, steps=STEPS, seed=0, **changes)
        out[name] = transferred(src.location, os.path.join(root, name), cfg,
                                oracle_target=tgt.location if method == "oracle" else None, force=True, **target)
    # Subsequent training at lr / 5 (the paper's smaller lr), and standard training from the same target init.
    ft_lr = recipe["lr"] / 5
    curves = {}
    for start in ft_starts:
        ft_dir = os.path.join(root, f"ft-{start}")
        if existing and not _complete(ft_dir):
            continue
        if not (fs.exists(fs.join(ft_dir, "trajectory.json")) and TrajectoryStore(ft_dir).complete):
            finetune(os.path.join(root, start), ft_dir, epochs=FM_FT_EPOCHS, lr=ft_lr, progress=False)
        curves[start] = TrajectoryStore(ft_dir).meta["val_acc"]
    std_data = standard.pop("data")
    if ft_starts and (not existing or _complete(os.path.join(root, "standard"))):
        std = trained(os.path.join(root, "standard"), std_data, **standard,
                      **{**kw, "epochs": FM_FT_EPOCHS, "lr": ft_lr})
        curves["scratch"] = std.meta["val_acc"]
    # The accuracy halfway between the trained target and the weight-matched trained source: where this is at
    # chance, the two trained nets sit in different basins even after the best permutation (Git Re-Basin's
    # barrier), and no permuted displacement can land the target init in the source's basin.
    row = {"pair": f"{a}-{b}", "runs": out, "ft": curves, "source_val": src.meta["val_acc"][-1], "target_val": tgt.meta["val_acc"][-1],
           "wm_interp": midpoint_accuracy(tgt, src, os.path.join(root, "wm-interp")),
           "source_norms": layer_norms(src), "target_norms": layer_norms(tgt),
           "oracle_cos": displacement_cosines(src, tgt, os.path.join(root, "oracle")) if "oracle" in out else {}}
    print(f"{key} {'pre' if pretrained else 'rand'} {a}-{b}: " + ", ".join(
        f"{m} {r['best_val_acc']:.1f}" for m, r in out.items()) + f"; source {row['source_val']:.1f}, "
        f"target {row['target_val']:.1f}; ft " + ", ".join(f"{k} {v[0]:.1f}/{v[-1]:.1f}" for k, v in curves.items()),
        flush=True)
    return row


def fm_done(root: str) -> bool:
    """Whether fm_pair got far enough here to report: its trainings, Naive, FGMT and Oracle finished (GMT, the
    costliest, may be missing: its column then averages the pairs that have it)."""
    return (all(_complete(os.path.join(root, d)) for d in ("source", "target"))
            and all(os.path.exists(os.path.join(root, m, "metrics.json")) for m in ("naive", "fgmt", "oracle")))


def _complete(path: str) -> bool:
    return os.path.exists(os.path.join(path, "trajectory.json")) and TrajectoryStore(path).complete


def fm_tables(results: dict, runs: list[str]) -> list[str]:
    lines = ["| model | scenario | pairs | " + " | ".join(runs) + " | FGMT / Oracle | source | trained target "
             "| wm midpoint |", "|---|---|---|" + "---|" * len(runs) + "---|---|---|---|"]
    for (key, pretrained), rows in results.items():
        best = {m: [r["runs"][m]["best_val_acc"] for r in rows if m in r["runs"]] for m in runs}
        ratio = statistics.mean(best["fgmt"]) / max(1e-9, statistics.mean(best["oracle"]))
        lines.append(f"| {key} | {'pre-trained 0-4 → 5-9' if pretrained else 'random init'} | "
                     f"{', '.join(r['pair'] for r in rows)} | "
                     + " | ".join(mean_std(best[m]) for m in runs) + f" | {ratio:.2f} | "
                     f"{mean_std([r['source_val'] for r in rows])} | {mean_std([r['target_val'] for r in rows])} | "
                     f"{mean_std([r['wm_interp'] for r in rows])} |")
    lines += ["", "Pairs per column: " + "; ".join(
        f"{m} {len([r for rows in results.values() for r in rows if m in r['runs']])}" for m in runs) + ".",
              "", "`wm midpoint`: val % of the midpoint between the trained target and the trained source weight-matched "
              "to it (BatchNorm recalibrated on 10 training batches); at chance, the two sit in different basins "
              "even after the best permutation.", "", "Final val % (step T) of the same runs:", "",
              "| model | scenario | " + " | ".join(runs) + " |", "|---|---|" + "---|" * len(runs)]
    for (key, pretrained), rows in results.items():
        lines.append(f"| {key} | {'pre-trained' if pretrained else 'random init'} | " + " | ".join(
            mean_std([r["runs"][m]["final_val_acc"] for r in rows if m in r["runs"]]) for m in runs) + " |")
    if not any(r["ft"] for rows in results.values() for r in rows):
        return lines + _norm_table(results)
    lines += ["", f"Subsequent training ({FM_FT_EPOCHS} epochs at the source lr / 5, from each run's best step; "
              "`scratch` = standard training from the same target init, same epochs and lr), val % after each "
              "epoch:", "", "| model | scenario | start | " + " | ".join(f"ep{e + 1}" for e in range(FM_FT_EPOCHS))
              + " |", "|---|---|---|" + "---|" * FM_FT_EPOCHS]
    for (key, pretrained), rows in results.items():
        for start in dict.fromkeys(k for r in rows for k in r["ft"]):
            lines.append(f"| {key} | {'pre-trained' if pretrained else 'random init'} | {start} | " + " | ".join(
                mean_std([r["ft"][start][e] for r in rows if start in r["ft"]]) for e in range(FM_FT_EPOCHS))
                + " |")
    return lines + _norm_table(results)


def _norm_table(results: dict) -> list[str]:
    lines = ["", "Per weight tensor of the sources (mean over pairs): |θ^0|; displacement |θ^T − θ^0| / |θ^0|; "
              "init share c = <θ^T, θ^0> / |θ^0|^2 (what `--init-decay` carries); |θ^T| / |θ^0|; and the cosine "
              "between the trained target's displacement and the source's under the Oracle's permutation, "
              "cos(θ2^T − θ2^0, π(θ1^T − θ1^0)):", "",
              "| model | scenario | tensor | abs θ^0 | displacement | init share c | abs θ^T / abs θ^0 | Oracle cos |",
              "|---|---|---|---|---|---|---|---|"]
    for (key, pretrained), rows in results.items():
        for i, layer in enumerate(rows[0]["source_norms"]):
            vals = [r["source_norms"][i] for r in rows]
            lines.append(f"| {key} | {'pre-trained' if pretrained else 'random init'} | {layer['name']} | "
                         f"{statistics.mean(v['init'] for v in vals):.2f} | "
                         f"{statistics.mean(v['disp'] for v in vals):.2f} | "
                         f"{statistics.mean(v['share'] for v in vals):.2f} | "
                         f"{statistics.mean(v['final'] / v['init'] for v in vals):.2f} | "
                         + (f"{statistics.mean(r['oracle_cos'][layer['name']] for r in rows if r['oracle_cos']):.2f} |"
                            if any(r["oracle_cos"] for r in rows) else " |"))
    return lines


def fashion_main(args) -> None:
    torch.set_num_threads(args.threads)
    t0, load0 = time.time(), os.getloadavg()
    runs = [r for r in FM_RUNS if r in args.runs.split(",")]
    keys = args.models.split(",")
    scenarios = [{"rand": False, "pre": True}[x] for x in args.scenarios.split(",")]
    results = {(k, p): [] for k in keys for p in scenarios}
    pairs = SEED_PAIRS[args.first_pair:args.pairs]
    for a, b in pairs:  # pair-major: a cut-short run still has every row
        for key in keys:
            for pretrained in scenarios:
                root = os.path.join(args.work, key + ("_pre" if pretrained else "_rand"), f"{a}-{b}")
                if args.existing and not fm_done(root):
                    continue
                results[(key, pretrained)].append(fm_pair(args.work, args.data, key, pretrained, a, b, runs,
                                                          [s for s in args.ft.split(",") if s], args.existing))
    results = {k: rows for k, rows in results.items() if rows}
    models = "; ".join(f"{k}: {m} {o}, lr {({**FM_RECIPE, **c})['lr']}" for k, (m, o, c) in FM_MODELS.items()
                       if k in keys)
    lines = ["# Reproduction on CNNs: Fashion-MNIST", "",
             f"Command: `python benchmarks/reproduce_cnn.py --data {args.data} --models {args.models} --runs "
             f"{args.runs} --ft {args.ft} --pairs {args.pairs} --scenarios {args.scenarios}{' --existing' if args.existing else ''} --work {args.work} --out {args.out}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs shared with "
             f"other jobs; load average {load0[0]:.1f} when this invocation started; runs already in --work are "
             f"reused, this invocation took {(time.time() - t0) / 60:.1f} min).", "",
             f"Data: `{args.data}` (a class-balanced subset of the training images: 90% train, 10% val; the pre-trained "
             "scenario pre-trains on classes 0-4 of it and fine-tunes on 5-9 with a new head). Recipe: SGD momentum "
             f"0.9, batch 128, cosine lr, {FM_RECIPE}; {models}. Transfers: T={STEPS}, linear trajectory, cosine λ, "
             "one batch of 128 per gradient, seed 0. Best val % over the trajectory, mean±std over the seed pairs in "
             "the `pairs` column (of (101, 102), (201, 202), (301, 302): those finished in time).", "",
             "Runs: the paper's naive / fgmt / gmt / oracle; `-decay` = the same with `--init-decay` (the transferred "
             "point carries the source's init share c: c θ2^0 + π(θ1^t − c θ1^0)); `fgmt-official` = FGMT with the "
             "official code's solver (cold starts, absolute stopping rule, no per-step sweep cap).", "",
             *fm_tables(results, runs)]
    write_report(args.out, lines)
    text = json.dumps({f"{k}|{'pre' if p else 'rand'}": rows for (k, p), rows in results.items()}, default=str)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        f.write(text.replace(root, ""))  # paths relative to the repository, not this machine's


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/reproduce-cnn")
    ap.add_argument("--out", default="benchmarks/results/reproduce-cnn.md")
    ap.add_argument("--models", default="conv8-bn,resnet20,conv8,conv3-bn")
    ap.add_argument("--data", default="digits", help="digits (the original table), or fashion-mnist[:PATH]:N")
    ap.add_argument("--runs", default=",".join(FM_RUNS), help="fashion-mnist: which runs of FM_RUNS")
    ap.add_argument("--pairs", type=int, default=3, help="fashion-mnist: the first N seed pairs")
    ap.add_argument("--threads", type=int, default=1, help="fashion-mnist: torch threads")
    ap.add_argument("--first-pair", type=int, default=0, help="fashion-mnist: start at this seed pair (0-based)")
    ap.add_argument("--scenarios", default="rand,pre", help="fashion-mnist: rand, pre or both")
    ap.add_argument("--ft", default="fgmt,naive", help="fashion-mnist: the runs trained on after the transfer ('' for none, "
                    "which also skips the standard training)")
    ap.add_argument("--existing", action="store_true", help="fashion-mnist: report only the pairs already finished")
    args = ap.parse_args()
    if args.data != "digits":
        return fashion_main(args)
    t0 = time.time()
    results = {}
    for key in args.models.split(","):
        for pretrained in (True, False):
            results[(key, pretrained)] = run_model(args.work, key, pretrained)
    lines = ["# Reproduction on CNNs (digits)", "",
             f"Command: `python benchmarks/reproduce_cnn.py --work {args.work} --out {args.out}` "
             f"({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {os.cpu_count()} CPUs, shared and loaded).", "",
             f"Recipe: {RECIPE}, with lr 0.02 for conv8 without BatchNorm; transfers T={STEPS}, cosine λ, one batch of 128 per gradient, "
             "seed 0. Best val % over the trajectory, mean±std over 3 seed pairs (val: 144 images for digits, "
             "72 for digits 5-9).", "", *table(results), "",
             f"Wall time of this invocation (runs already in --work are reused): {(time.time() - t0) / 60:.1f} min."]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
