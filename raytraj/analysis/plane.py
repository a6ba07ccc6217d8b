"""``raytraj analyze plane``: val loss and accuracy on the plane through three models (Garipov et al.).

With w1, w2, w3 the parameters of A, B, C:

    u = (w2 - w1) / |w2 - w1|,   v = the part of (w3 - w1) orthogonal to u, normalised,

so A sits at (0, 0), B at (|w2 - w1|, 0) and C at (<w3 - w1, u>, |that orthogonal part|); the
point (x, y) is w1 + x u + y v. The plane lives in parameter space (BatchNorm statistics are
not parameters: they are re-estimated at every point). Every point is a combination of A, B
and C with coefficients summing to one, which is what the grid workers receive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from .. import fs
from ..data import load_data
from ..evaluation import has_batchnorm
from ..models import build_model, model_from_dict
from ..ray_config import RayConfig
from ..writelock import locks_output
from .align import align_weights, checked_spec
from .figures import pyplot, save_figure
from .grid import evaluate_points
from .interpolate import check_points
from .models import AnalysisError, check_data_fits, check_same_architecture, data_config, load_models


def _dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in a))


@dataclass
class PlaneBasis:
    """The plane through three states, over the tensors ``names`` (the parameters)."""

    origin: dict[str, torch.Tensor]
    u: dict[str, torch.Tensor]
    v: dict[str, torch.Tensor]
    ab: float  # |w2 - w1|
    c: float  # <w3 - w1, u>
    h: float  # |the part of w3 - w1 orthogonal to u|

    @classmethod
    def through(cls, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], c: Mapping[str, torch.Tensor],
                names: Sequence[str]) -> "PlaneBasis":
        origin = {k: a[k].double() for k in names}
        d_ab = {k: b[k].double() - origin[k] for k in names}
        ab = _dot(d_ab, d_ab) ** 0.5
        if ab == 0:
            raise AnalysisError("A and B are the same model, so they span no direction; pick two different models")
        u = {k: t / ab for k, t in d_ab.items()}
        d_ac = {k: c[k].double() - origin[k] for k in names}
        proj = _dot(d_ac, u)
        w = {k: d_ac[k] - proj * u[k] for k in names}
        h = _dot(w, w) ** 0.5
        if h <= 1e-9 * max(ab, 1.0):
            raise AnalysisError("C lies on the line through A and B, so the three models span no plane; "
                                "pick a third model off that line")
        return cls(origin, u, {k: t / h for k, t in w.items()}, ab, proj, h)

    @property
    def points(self) -> list[tuple[float, float]]:
        """Coordinates of A, B and C."""
        return [(0.0, 0.0), (self.ab, 0.0), (self.c, self.h)]

    def coords(self, state: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        """(x, y) of the projection of ``state`` onto the plane."""
        d = {k: state[k].double() - o for k, o in self.origin.items()}
        return _dot(d, self.u), _dot(d, self.v)

    def coefficients(self, x: float, y: float) -> list[float]:
        """(ca, cb, cc) with ca A + cb B + cc C = w1 + x u + y v (and ca + cb + cc = 1)."""
        cb = x / self.ab - y * self.c / (self.ab * self.h)
        cc = y / self.h
        return [1.0 - cb - cc, cb, cc]


def grid_axes(basis: PlaneBasis, grid: int, margin: float) -> tuple[list[float], list[float]]:
    """``grid`` values per axis spanning the three models plus ``margin`` of that span on each side."""
    xs, ys = zip(*basis.points)
    (x0, x1), (y0, y1) = (min(xs), max(xs)), (min(ys), max(ys))
    wx, wy = margin * (x1 - x0), margin * (y1 - y0)
    return np.linspace(x0 - wx, x1 + wx, grid).tolist(), np.linspace(y0 - wy, y1 + wy, grid).tolist()


@locks_output("out", what="analysis")
def plane_landscape(a: str, b: str, c: str, out: str, *, grid: int = 21, margin: float = 0.2, align: str = "",
                    data: str | None = None, labels: Sequence[str] | None = None, bn_batches: int = 10,
                    seed: int = 0, backend: str = "local", device: str | None = None,
                    ray_config: RayConfig | None = None,
                    progress: bool = True) -> dict:
    """Evaluate val loss and accuracy on a grid over the plane through A, B, C; writes OUT/plane.json, .png.

    Args:
        a, b, c: model references (run folder, STORE[:STEP] or a raytraj .safetensors file).
        out: output folder.
        grid: points per axis (grid x grid in all).
        margin: extra room around the three models, as a fraction of their span per axis.
        align: which of B and C to weight-match to A first: ``""`` (none), ``"b"``, ``"c"`` or ``"bc"``.
            The paper's Fig. 7 has A = Target, B = FGMT+FT, C = Source, and matches C ("Source (Permuted)").
        data: score on this data (default: A's).
        labels: names of the three models in the plot (default: from their paths).
        bn_batches, seed, backend, device, ray_config, progress: as in
            :func:`raytraj.analysis.interpolate.interpolate_models`.

    Returns:
        what OUT/plane.json holds: the grid's coordinates, the models' positions, val loss and accuracy.
    """
    check_points(grid, "--grid")
    if margin < 0:
        raise AnalysisError(f"--margin must be >= 0, got {margin}")
    models = load_models([a, b, c])
    check_same_architecture(models)
    labels = list(labels) if labels else [m.label for m in models]
    if len(labels) != 3:
        raise AnalysisError(f"--labels needs three names, got {len(labels)}")
    align = "" if align == "none" else align.lower()
    if not set(align) <= {"b", "c"}:
        raise AnalysisError(f"--align names the models to weight-match to A: b, c, bc or none; got {align!r}")
    dataset = load_data(data_config(models, data))
    check_data_fits(models[0].model, dataset)
    if align:
        spec = checked_spec(models[0].model, dataset)
        for letter, m in zip("bc", models[1:]):
            if letter in align:
                m.state = align_weights(m.model, dataset, models[0].state, m.state, seed=seed, spec=spec)[0]
    names = [n for n, _ in build_model(model_from_dict(models[0].model), 0).named_parameters()]
    basis = PlaneBasis.through(*(m.state for m in models), names)
    xs, ys = grid_axes(basis, grid, margin)
    cells = [(x, y) for y in ys for x in xs]
    rows = evaluate_points(
        {"model": models[0].model, "data": dataset, "bases": [m.state for m in models], "splits": ("val",),
         "bn_batches": bn_batches, "seed": seed},
        [basis.coefficients(x, y) for x, y in cells], backend=backend, device=device, ray_config=ray_config,
        progress=progress, desc="plane")
    # Said in the plot's title only where it happened: a model with BatchNorm, and bn_batches > 0.
    recalibrated = bool(bn_batches) and has_batchnorm(build_model(models[0].model, 0))
    result = {
        "models": [m.ref for m in models], "bn_recalibrated": recalibrated, "labels": labels, "align": align, "data": dataset.config.describe(),
        "coords": {lab: list(p) for lab, p in zip(labels, basis.points)},
        "distance_ab": basis.ab, "xs": xs, "ys": ys,
        "val_loss": [[rows[j * grid + i]["val_loss"] for i in range(grid)] for j in range(grid)],
        "val_acc": [[rows[j * grid + i]["val_acc"] for i in range(grid)] for j in range(grid)],
    }
    fs.atomic_write_json(fs.join(out, "plane.json"), result)
    plot_plane(result, fs.join(out, "plane.png"))
    return result


def plot_plane(r: dict, out: str) -> str:
    from matplotlib.colors import LogNorm

    plt = pyplot()
    xs, ys = np.array(r["xs"]), np.array(r["ys"])
    loss, acc = np.array(r["val_loss"]), np.array(r["val_acc"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    lo, hi = max(float(loss.min()), 1e-6), float(loss.max())
    levels = np.geomspace(lo, hi * 1.0001, 24)
    cs = axes[0].contourf(xs, ys, np.clip(loss, lo, None), levels=levels, norm=LogNorm(lo, hi), cmap="viridis")
    fig.colorbar(cs, ax=axes[0], label="val loss (log scale)", format="%.2g")
    ca = axes[1].contourf(xs, ys, acc, levels=np.linspace(min(0.0, acc.min()), 100, 21), cmap="magma")
    fig.colorbar(ca, ax=axes[1], label="val accuracy (%)")
    span = (xs.max() - xs.min()) / max(ys.max() - ys.min(), 1e-12)
    for ax, what in zip(axes, ("val loss", "val accuracy")):
        for (label, (x, y)), marker in zip(r["coords"].items(), ("o", "s", "^")):
            ax.plot(x, y, marker, ms=9, mfc="white", mec="black", mew=1.5)
            ax.annotate(label, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=9, color="white",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.6, "lw": 0})
        ax.set_xlabel("u: along B - A (parameter distance)")
        ax.set_ylabel("v: C - A, orthogonal to u")
        ax.set_title(what)
        if 0.25 <= span <= 4:
            ax.set_aspect("equal")
    moved = [lab for letter, lab in zip("bc", r["labels"][1:]) if letter in r["align"]]
    aligned = f"; {' and '.join(moved)} weight-matched to {r['labels'][0]}" if moved else ""
    done = "; ".join(x for x in ("BatchNorm recalibrated per point" if r.get("bn_recalibrated") else "",
                                  aligned.removeprefix("; ")) if x)
    fig.suptitle(f"plane through three models on {r['data']}" + (f" ({done})" if done else ""), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)
