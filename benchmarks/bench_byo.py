"""A user-defined model that is not in the zoo: Naive, FGMT and Oracle on it.

    python benchmarks/bench_byo.py --out benchmarks/results/byo.md

The model is the tests' user package (tests/userpkg.py): a conv stem over the whole 8x8 digit,
GroupNorm, a residual block and Dropout, built by a factory named by import path. Each source is
trained by a plain PyTorch loop and recorded with TrajectoryRecorder; Oracle's target is the same
loop from the target's init. Transfers run through the CLI's code path (`raytraj transfer`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import ray
import torch

from report import write_report

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from userpkg import importable, write_user_package  # noqa: E402

from raytraj.cli import main as cli  # noqa: E402
from raytraj.runfolder import RunFolder  # noqa: E402

PAIRS = ((1, 5), (2, 6))
METHODS = ("naive", "fgmt", "oracle")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/byo.md")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-byo-")
    importable(write_user_package(work))
    from byo_userpkg.train import main as train_loop

    rows = []
    for src_seed, tgt_seed in PAIRS:
        src, oracle = os.path.join(work, f"src{src_seed}"), os.path.join(work, f"tgt{tgt_seed}")
        t0 = time.perf_counter()
        train_loop(src, seed=src_seed, epochs=args.epochs)
        train_s = time.perf_counter() - t0
        train_loop(oracle, seed=tgt_seed, epochs=args.epochs)
        from raytraj.evaluation import evaluate_path

        row = {"pair": f"{src_seed} -> {tgt_seed}", "source": evaluate_path(src)["accuracy"],
               "trained target": evaluate_path(oracle)["accuracy"], "train_s": train_s}
        for method in METHODS:
            out = os.path.join(work, f"{method}-{src_seed}")
            argv = ["transfer", "--source", src, "--target-seed", str(tgt_seed), "--method", method,
                    "--steps", str(args.steps), "--out", out, "--quiet"]
            if method == "oracle":
                argv += ["--oracle-target", oracle]
            t0 = time.perf_counter()
            assert cli(argv) == 0
            row[f"{method}_s"] = time.perf_counter() - t0
            row[method] = RunFolder(out).metrics()["test_acc"]
        rows.append(row)

    lines = [
        "# A user-defined model (not in the zoo)",
        "",
        f"Command: `python benchmarks/bench_byo.py --out {args.out}` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs shared with other jobs, torch {torch.__version__}, ray {ray.__version__}, "
        f"Python {platform.python_version()}).",
        "",
        "Digits (sklearn), the tests' `byo_userpkg.nets:make_net` (width 64: conv stem, GroupNorm, residual "
        f"block, Dropout 0.1), trained {args.epochs} epochs by a plain SGD loop recorded with "
        f"TrajectoryRecorder. Transfers to a random init of the target seed, T={args.steps}, cosine schedule, "
        "best-on-val step scored on test (%).",
        "",
        "| seeds source -> target | source trained | target trained | Naive | FGMT | Oracle |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['source']:.1f} | {r['trained target']:.1f} | {r['naive']:.1f} | "
                     f"{r['fgmt']:.1f} | {r['oracle']:.1f} |")
    mean = {m: sum(r[m] for r in rows) / len(rows) for m in METHODS}
    lines.append(f"| mean | | | {mean['naive']:.1f} | {mean['fgmt']:.1f} | {mean['oracle']:.1f} |")
    lines += ["", "Seconds per run (FGMT / Naive ratio is the cost of the matching): "
              + ", ".join(f"{r['pair']}: FGMT/Naive {r['fgmt_s'] / r['naive_s']:.2f}" for r in rows)]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
