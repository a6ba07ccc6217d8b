"""``raytraj analyze interpolate``: loss and accuracy along the segment (1 - a) A + a B.

BatchNorm statistics are re-estimated at every point (the mixture of two models' weights has
none of its own). The barrier is the largest gap, over a, between the loss at the point and
the straight line between the endpoint losses; ``barrier`` uses the training loss (as linear
mode connectivity is usually measured), ``val_barrier`` the validation loss.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import fs
from ..data import load_data
from ..evaluation import has_batchnorm
from ..models import build_model
from ..ray_config import RayConfig
from ..writelock import locks_output
from .align import align_weights
from .figures import pyplot, save_figure
from .grid import evaluate_points
from .models import AnalysisError, check_data_fits, check_same_architecture, data_config, load_models


def barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """The loss barrier of a segment: max over a of loss(a) - ((1 - a) loss(0) + a loss(1)).

    Args:
        alphas: the interpolation coefficients, from 0 to 1.
        losses: the loss at each.

    Returns:
        the barrier (0 when the loss is convex along the segment).
    """
    a, loss = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    return float(np.max(loss - ((1 - a) * loss[0] + a * loss[-1])))


def check_points(points: int, flag: str = "--points") -> None:
    if points < 2:
        raise AnalysisError(f"{flag} must be >= 2 (the two endpoints at least), got {points}")


@locks_output("out", what="analysis")
def interpolate_models(a: str, b: str, out: str, *, points: int = 25, align: str = "none",
                       data: str | None = None, bn_batches: int = 10, seed: int = 0, backend: str = "local",
                       device: str | None = None,
                    ray_config: RayConfig | None = None, progress: bool = True) -> dict:
    """Evaluate the segment between models ``a`` and ``b``; writes OUT/interpolate.json and .png.

    Args:
        a, b: model references (run folder, STORE[:STEP] or a raytraj .safetensors file).
        out: output folder.
        points: number of evenly spaced a in [0, 1], endpoints included.
        align: ``weights`` weight-matches B to A first; ``none`` uses B as it is.
        data: score on this data (default: A's).
        bn_batches: training batches for BatchNorm recalibration at each point.
        seed: fixes those batches and the matching solver's order.
        backend, device, ray_config: where the points are scored, as in
            :func:`raytraj.analysis.grid.evaluate_points`.
        progress: show a progress bar.

    Returns:
        what OUT/interpolate.json holds: per point train/val loss and accuracy, the barriers,
        the accuracy drop, and the matching's summary when aligned.
    """
    check_points(points)
    if align not in ("weights", "none"):
        raise AnalysisError(f"--align must be weights or none, got {align!r}")
    ma, mb = load_models([a, b])
    check_same_architecture([ma, mb])
    dataset = load_data(data_config([ma, mb], data))
    check_data_fits(ma.model, dataset)
    other, match_info = mb.state, None
    if align == "weights":
        other, info = align_weights(ma.model, dataset, ma.state, mb.state, seed=seed)
        match_info = {k: info[k] for k in ("objective", "sweeps", "converged")}
    alphas = np.linspace(0.0, 1.0, points).tolist()
    rows = evaluate_points(
        {"model": ma.model, "data": dataset, "bases": [ma.state, other], "splits": ("train", "val"),
         "bn_batches": bn_batches, "seed": seed},
        [[1 - x, x] for x in alphas], backend=backend, device=device, ray_config=ray_config, progress=progress,
        desc="interpolate")
    # Said in the plot's title only where it happened: a model with BatchNorm, and bn_batches > 0.
    recalibrated = bool(bn_batches) and has_batchnorm(build_model(ma.model, 0))
    result = {
        "a": ma.ref, "b": mb.ref, "labels": [ma.label, mb.label], "align": align, "data": dataset.config.describe(),
        "alphas": alphas, "bn_recalibrated": recalibrated,
        **{k: [r[k] for r in rows] for k in ("train_loss", "val_loss", "train_acc", "val_acc")},
    }
    result["barrier"] = barrier(alphas, result["train_loss"])
    result["val_barrier"] = barrier(alphas, result["val_loss"])
    result["acc_drop"] = float(min(result["val_acc"][0], result["val_acc"][-1]) - min(result["val_acc"]))
    result["matching"] = match_info
    fs.atomic_write_json(fs.join(out, "interpolate.json"), result)
    plot_interpolation(result, fs.join(out, "interpolate.png"))
    return result


def interpolation_title(r: dict) -> str:
    """What was done, and only that: BatchNorm recalibration is named only for a model that has BatchNorm."""
    return (f"linear interpolation on {r['data']}"
            + (", BatchNorm recalibrated per point" if r.get("bn_recalibrated") else "")
            + (", B weight-matched to A" if r["align"] == "weights" else ""))


def plot_interpolation(r: dict, out: str, title: str | None = None) -> str:
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=110)
    a = r["alphas"]
    ax_loss.plot(a, r["train_loss"], "o-", ms=3, label=f"train (barrier {r['barrier']:.3f})")
    ax_loss.plot(a, r["val_loss"], "s--", ms=3, label=f"val (barrier {r['val_barrier']:.3f})")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_acc.plot(a, r["train_acc"], "o-", ms=3, label="train")
    ax_acc.plot(a, r["val_acc"], "s--", ms=3, label="val")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    left, right = r["labels"]
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel(f"α: (1-α)·{left} + α·{right}" + (" (aligned)" if r["align"] == "weights" else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or interpolation_title(r), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
