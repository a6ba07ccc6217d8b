"""Accuracy against transfer step for several runs, as in the paper's Fig. 5."""

from __future__ import annotations

import io
import os
from collections import Counter

from . import fs
from .runfolder import METRICS, RunFolder
from .trajectory import TrajectoryStore, is_store


def _series(path: str) -> tuple[str, list[int], list[float], bool]:
    """(label, x, y, is_training) for a transfer run folder or a training store."""
    run = RunFolder(path)
    if run.finished:
        m = run.metrics()
        steps = [i + 1 for i, v in enumerate(m["val_acc"]) if v is not None]
        return m["method"].upper() if m["method"] in ("gmt", "fgmt") else m["method"].capitalize(), steps, \
            [v for v in m["val_acc"] if v is not None], False
    if is_store(path):
        points = [(s["step"], s["val_acc"]) for s in TrajectoryStore(path).manifest["steps"] if "val_acc" in s]
        return f"training {os.path.basename(os.path.normpath(path))} (per checkpoint)", [p[0] for p in points], \
            [p[1] for p in points], True
    raise FileNotFoundError(f"{path} is neither a transfer run ({METRICS}) nor a trajectory store")


def plot_runs(runs: list[str], out: str, title: str | None = None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [(_series(r), r) for r in runs]
    counts = Counter(label for (label, *_), _ in series)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for (label, x, y, training), path in series:
        if counts[label] > 1:
            label = f"{label} ({os.path.basename(os.path.normpath(path))})"
        ax.plot(x, y, linestyle="--" if training else "-", marker="" if training else "o", markersize=3, label=label)
    ax.set_xlabel("transfer step t (training: checkpoint)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(0, 100)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    fs.atomic_write_bytes(out, buf.getvalue())
    return out
