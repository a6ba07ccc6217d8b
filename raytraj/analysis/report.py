"""``raytraj analyze report``: one page for a set of transfer runs.

Four panels: val accuracy against transfer step for every run; best and final val (and test
at the best step) per run; the interpolation from a normally trained target to each run's
best model, with its barrier (does the transfer land in the target's basin?); and the time
per transfer step, split into gradients, solves and evaluation.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .. import fs
from ..data import load_data
from ..plot import _series
from ..runfolder import METRICS, RunFolder, model_file
from ..ray_config import RayConfig
from ..writelock import locks_output
from .align import align_weights, checked_spec
from .figures import pyplot, save_figure
from .grid import evaluate_points
from .interpolate import barrier, check_points
from .models import AnalysisError, check_same_architecture, data_config, load_models


def _run(path: str) -> dict:
    run = RunFolder(path)
    if not run.has_model("best"):
        raise AnalysisError(f"{path} is not a finished transfer run (no {METRICS} and {model_file('best')}); pass "
                            "folders written by `raytraj transfer`")
    return run.metrics()


def _default_target(runs: Sequence[str]) -> str | None:
    """The trained target an Oracle run was matched to, if any run names one."""
    for r in runs:
        if RunFolder(r).started:
            oracle = RunFolder(r).config().get("oracle_target")
            if oracle:
                return oracle
    return None


@locks_output("out", what="analysis")
def transfer_report(runs: Sequence[str], out: str, *, target: str | None = None, points: int = 11,
                    align: str = "none", bn_batches: int = 10, seed: int = 0, backend: str = "local",
                    device: str | None = None,
                    ray_config: RayConfig | None = None, progress: bool = True) -> dict:
    """Summarise transfer ``runs``; writes OUT/report.json and OUT/report.png.

    Args:
        runs: transfer run folders (Naive, FGMT, Oracle, ...).
        out: output folder.
        target: the normally trained target (STORE[:STEP]) for the barriers; default: the Oracle
            run's ``--oracle-target`` if one of the runs is an Oracle run; without one, no barriers.
        points: points per interpolation.
        align: ``weights`` weight-matches each run's model to the target first.
        bn_batches, seed, backend, device, ray_config, progress: as in
            :func:`raytraj.analysis.interpolate.interpolate_models`.

    Returns:
        what OUT/report.json holds: a row per run, and the interpolations to the target.
    """
    if not runs:
        raise AnalysisError("give at least one transfer run folder")
    check_points(points)
    metrics = [_run(r) for r in runs]
    names = [os.path.basename(os.path.normpath(r)) for r in runs]
    labels = [m["method"] if m["method"] == n else f"{m['method']} ({n})" for n, m in zip(names, metrics)]
    rows = []
    for r, m, label in zip(runs, metrics, labels):
        steps = max(1, m["steps"])
        rows.append({"run": r, "label": label, "method": m["method"], "steps": m["steps"],
                     "best_val_acc": m["best_val_acc"], "final_val_acc": m["final_val_acc"], "test_acc": m["test_acc"],
                     "per_step_s": {k.removesuffix("_s"): m["timing"].get(k, 0.0) / steps
                                    for k in ("grad_s", "solve_s", "eval_s")},
                     "total_s": m["timing"].get("total_s")})
    target = target or _default_target(runs)
    interpolations = None
    if target:
        tgt, *models = load_models([target, *runs])  # --target may be a bare safetensors file
        check_same_architecture([tgt, *models])
        dataset = load_data(data_config([tgt]))
        states = [m.state for m in models]
        if align == "weights":
            spec = checked_spec(tgt.model, dataset)
            states = [align_weights(tgt.model, dataset, tgt.state, s, seed=seed, spec=spec)[0] for s in states]
        alphas = np.linspace(0, 1, points).tolist()
        coeffs = []
        for j in range(len(states)):
            for a in alphas:
                c = [0.0] * (1 + len(states))
                c[0], c[1 + j] = 1 - a, a
                coeffs.append(c)
        res = evaluate_points({"model": tgt.model, "data": dataset, "bases": [tgt.state, *states],
                               "splits": ("train", "val"), "bn_batches": bn_batches, "seed": seed},
                              coeffs, backend=backend, device=device, ray_config=ray_config, progress=progress,
                              desc="report barriers")
        interpolations = {"target": target, "alphas": alphas, "align": align}
        for j, row in enumerate(rows):
            seg = res[j * points:(j + 1) * points]
            row["interpolation"] = {k: [p[k] for p in seg] for k in ("train_loss", "val_loss", "val_acc")}
            row["barrier"] = barrier(alphas, row["interpolation"]["train_loss"])
            row["val_barrier"] = barrier(alphas, row["interpolation"]["val_loss"])
    result = {"runs": rows, "target": interpolations}
    fs.atomic_write_json(fs.join(out, "report.json"), result)
    plot_report(runs, result, fs.join(out, "report.png"))
    return result


def plot_report(runs: Sequence[str], r: dict, out: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=100)
    rows = r["runs"]
    ax = axes[0, 0]
    for path, row in zip(runs, rows):
        _, x, y, _ = _series(path)
        ax.plot(x, y, "o-", ms=3, label=row["label"])
    ax.set_xlabel("transfer step t")
    ax.set_ylabel("val accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("accuracy along the transfer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    x = np.arange(len(rows))
    for k, (key, name) in enumerate((("best_val_acc", "best val"), ("final_val_acc", "final val"),
                                     ("test_acc", "test at best step"))):
        vals = [row[key] for row in rows]
        bars = ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [row["label"] for row in rows], fontsize=8, rotation=10)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("methods compared")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1, 0]
    if r["target"]:
        for row in rows:
            ax.plot(r["target"]["alphas"], row["interpolation"]["train_loss"], "o-", ms=3,
                    label=f"{row['label']}: barrier {row['barrier']:.3f}")
        ax.set_xlabel("α: (1-α)·trained target + α·transferred (best step)"
                      + (", aligned" if r["target"]["align"] == "weights" else ""))
        ax.set_ylabel("train loss")
        ax.set_yscale("log")
        ax.set_title(f"interpolation to the trained target {os.path.basename(os.path.normpath(r['target']['target']))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trained target given (--target STORE)", ha="center", va="center")
        ax.set_axis_off()

    ax = axes[1, 1]
    bottom = np.zeros(len(rows))
    for part in ("grad", "solve", "eval"):
        vals = np.array([row["per_step_s"][part] for row in rows])
        ax.bar(x, vals, 0.6, bottom=bottom, label=part)
        bottom += vals
    ax.set_xticks(x, [row["label"] for row in rows], fontsize=8, rotation=10)
    ax.set_ylabel("seconds per transfer step")
    ax.set_title("time per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)
