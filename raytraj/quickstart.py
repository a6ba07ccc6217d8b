"""``raytraj quickstart``: the whole product in a few minutes on a laptop, on bundled data.

Train a source MLP on scikit-learn's digits (recording its trajectory), transfer the
trajectory to a new random init with Naive and FGMT, print a table, and plot the curves.
"""

from __future__ import annotations

from . import fs
from .plot import plot_runs
from .runfolder import RunFolder
from .train import train_from_args
from .trajectory import TrajectoryStore, is_store
from .transfer import TransferConfig, transfer
from .transfer.config import QUICK_STEPS


def quickstart(out: str = "runs/quickstart", *, data: str = "digits", model: str = "mlp", epochs: int = 20,
               steps: int = QUICK_STEPS, seed: int = 1, target_seed: int = 2, methods=("naive", "fgmt"),
               progress: bool = True) -> list[dict]:
    source = fs.join(out, "source")
    store = TrajectoryStore(source) if is_store(source) else None
    if store is None or not store.complete:
        print(f"training the source: {model} on {data}, {epochs} epochs, seed {seed} -> {source}")
        train_from_args(model, data, source, seed=seed, epochs=epochs, progress=progress)
        store = TrajectoryStore(source)
    meta = store.meta
    rows = []
    for method in methods:
        run = fs.join(out, method)
        folder = RunFolder(run)
        if folder.finished:
            rows.append(folder.metrics())
            continue
        print(f"transferring with {method}: T={steps} (cosine), target seed {target_seed} -> {run}")
        rows.append(transfer(source, run, TransferConfig(method=method, steps=steps, seed=0), target_seed=target_seed,
                             resume=folder.started, progress=progress))
    print()
    print(f"source: {model} on {data}, trained {epochs} epochs in {meta['train_s']:.1f}s "
          f"(optimiser time), val {meta['val_acc'][-1]:.1f}%, test {meta['test_acc']:.1f}%")
    print(format_table(rows))
    figure = plot_runs([fs.join(out, m) for m in methods] + [source], fs.join(out, "transfer.png"),
                       title=f"{model} on {data}: transfer to a new init (T={steps})")
    print(f"\nplot: {figure}")
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'method':<8} {'best step':>9} {'best val':>9} {'final val':>9} {'test@best':>9} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for m in rows:
        lines.append(f"{m['method']:<8} {m['best_step']:>9d} {m['best_val_acc']:>9.1f} {m['final_val_acc']:>9.1f} "
                     f"{m['test_acc']:>9.1f} {m['timing']['total_s']:>8.1f}")
    return "\n".join(lines)
