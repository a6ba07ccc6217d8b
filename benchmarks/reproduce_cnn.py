"""CNN rows of the reproduction: Conv8 (with and without BatchNorm), a 3-conv CNN and ResNet-20 on digits.

    python benchmarks/reproduce_cnn.py --work runs/reproduce-cnn --out benchmarks/results/reproduce-cnn.md

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
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from reproduce import mean_std, trained, transferred  # noqa: E402

from raytraj import fs  # noqa: E402
from raytraj.data import load_data  # noqa: E402
from raytraj.analysis import interpolate_models  # noqa: E402
from raytraj.models import build_model  # noqa: E402
from raytraj.perm import apply_permutation, infer_spec, random_permutation  # noqa: E402
from raytraj.trajectory import TrajectoryStore, TrajectoryWriter  # noqa: E402
from raytraj.transfer import TransferConfig  # noqa: E402

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/reproduce-cnn")
    ap.add_argument("--out", default="benchmarks/results/reproduce-cnn.md")
    ap.add_argument("--models", default="conv8-bn,resnet20,conv8,conv3-bn")
    args = ap.parse_args()
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
