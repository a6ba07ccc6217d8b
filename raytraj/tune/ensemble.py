"""``raytraj ensemble``: K members from one recorded trajectory, as parallel Tune trials.

Each member transfers the source trajectory to its own init (a seed, or a given pre-trained
store), optionally trains on for a few epochs, and saves its softmax outputs. The ensemble is
the mean of the members' softmax; it is scored on test against each member and the source.

    OUT/members/member-000/...   each member's transfer run folder (+ finetune/, probs-*.npy)
    OUT/ensemble.json            members, ensemble_test_acc, ensemble_acc_by_size, timing
    OUT/ensemble.png             ensemble accuracy against ensemble size
    OUT/tune/ensemble/           Tune's experiment state (or under --storage)
"""

from __future__ import annotations

import io
import time

import numpy as np
from ray import tune

from .. import fs
from ..config import ConfigError, to_dict
from ..recipes import check_finetune
from ..recorded import data_of, model_of
from ..trajectory import is_store
from ..transfer import TransferConfig
from ..transfer.problem import check_targets, open_source
from ..writelock import locks_output
from .runner import check_trial_options, refuse_unfinished, result_rows, run_experiment
from .trial import load_probs

RESULT = "ensemble.json"


def member_targets(members: int, targets: str | list[str] | None, new_head: bool, seed_base: int) -> list[dict]:
    if members < 1:
        raise ConfigError(f"--members must be >= 1, got {members}")
    if targets in (None, "random"):
        return [{"target_seed": seed_base + k} for k in range(members)]
    stores = targets.split(",") if isinstance(targets, str) else list(targets)
    if len(stores) != members:
        raise ConfigError(f"--targets names {len(stores)} stores for {members} members; give one per member")
    return [{"target_init": fs.absolute(s), "new_head": new_head} for s in stores]


@locks_output("out", what="ensemble")
def run_ensemble(source: str, out: str, *, members: int, cfg: TransferConfig, targets=None, new_head: bool = False,
                 seed_base: int = 1000, finetune_epochs: int = 0, finetune_lr: float | None = None,
                 storage: str | None = None, cpus_per_trial: float = 1, gpus_per_trial: float | None = None,
                 max_concurrent: int | None = None, max_failures: int = 2, resume: bool = False,
                 address: str | None = None, runtime_env: dict | None = None) -> dict:
    """K transfers of ``source`` as Tune trials, then their ensemble; see the module docstring.

    Args:
        gpus_per_trial: None takes one GPU per trial when the cluster has GPUs, else none.
        resume: continue an interrupted ensemble in ``out``; other settings than its first start
            are refused before anything is touched.
        runtime_env: Ray's runtime_env (``working_dir``, ``py_modules``) for a user model's modules.

    Returns:
        the ensemble's record (also OUT/ensemble.json): per-member rows, the ensemble's test
        accuracy by size, the source's, and timings against training the members from scratch.
    """
    check_finetune(finetune_epochs, finetune_lr)
    check_trial_options(cpus_per_trial, gpus_per_trial, max_concurrent)
    target_list = member_targets(members, targets, new_head, seed_base)
    source, out = fs.absolute(source), fs.absolute(out)
    if is_store(out):
        raise ConfigError(f"--out {out} is a trajectory store; an ensemble needs a folder of its own")
    store = open_source(source)  # fail before starting anything if the source is not usable
    check_targets(source, target_list, cfg.seed)  # ... its model cannot be rebuilt, or a target is its init
    t0 = time.perf_counter()
    settings = {"source": source, "out": out, "targets": target_list, "transfer": to_dict(cfg),
                "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr, "save_probs": True}
    grid = run_experiment(
        "ensemble", {"member": tune.grid_search(list(range(members)))}, settings=settings,
        out=out, storage=storage, resume=resume, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False),
        max_failures=max_failures, address=address, runtime_env=runtime_env, trials=members,
    )
    wall_s = time.perf_counter() - t0
    rows = result_rows(grid)
    refuse_unfinished(rows, "ensemble members", members)
    rows.sort(key=lambda r: r["config"]["member"])
    data = data_of(store)
    labels = data.y["test"].numpy()
    dirs = [fs.join(out, "members", f"member-{r['config']['member']:03d}") for r in rows]
    probs = [load_probs(d, "test") for d in dirs]
    by_size = [100.0 * float((np.mean(probs[:k], axis=0).argmax(1) == labels).mean()) for k in range(1, members + 1)]
    member_rows = []
    for r, d in zip(rows, dirs):
        m = r["metrics"]
        member_rows.append({
            "member": r["config"]["member"], "target": target_list[r["config"]["member"]], "run": d,
            "test_acc": m["member_test_acc"], "best_step": m["best_step"], "best_val_acc": m["best_val_acc"],
            "transfer_test_acc": m["test_acc"], "seconds": m["transfer_s"] + m.get("finetune_s", 0.0),
            "cpu_s": m.get("cpu_s"),
            **({"finetune_test_acc": m["finetune_test_acc"]} if "finetune_test_acc" in m else {}),
        })
    trial_s = sum(r["seconds"] for r in member_rows)
    result = {
        "source": source,
        "method": cfg.method,
        "members": member_rows,
        "ensemble_test_acc": by_size[-1],
        "ensemble_acc_by_size": by_size,
        "mean_member_test_acc": float(np.mean([r["test_acc"] for r in member_rows])),
        "source_test_acc": _source_test_acc(store, data),
        "finetune_epochs": finetune_epochs,
        "timing": {
            "wall_s": wall_s,
            "trial_s_sum": trial_s,
            # CPU seconds of the members' trials (transfer, subsequent training, scoring), all threads
            "trial_cpu_s_sum": sum(r["cpu_s"] or 0.0 for r in member_rows),
            # What K trainings from scratch would cost with the source's recipe, read off its record.
            "scratch_s_estimate": members * store.meta["total_s"],
            "source_train_s": store.meta["total_s"],
        },
    }
    fs.atomic_write_json(fs.join(out, RESULT), result)
    plot_ensemble(result, fs.join(out, "ensemble.png"))
    return result


def _source_test_acc(store, data) -> float:
    """As recorded by `raytraj train`; a TrajectoryRecorder store is scored here."""
    if store.meta.get("test_acc") is not None:
        return store.meta["test_acc"]
    from ..evaluation import accuracy
    from ..models import build_model

    return accuracy(build_model(model_of(store), 0), store.read(store.last_step), data, "test")


def plot_ensemble(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = list(range(1, len(result["ensemble_acc_by_size"]) + 1))
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    ax.plot(k, result["ensemble_acc_by_size"], marker="o", label="ensemble (mean softmax)")
    ax.scatter(k, [m["test_acc"] for m in result["members"]], color="gray", s=14, label="member k alone")
    if result.get("source_test_acc") is not None:
        ax.axhline(result["source_test_acc"], linestyle="--", color="tab:green", label="source (trained)")
    ax.set_xlabel("ensemble size k")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{result['method'].upper()} ensemble from one trajectory")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    fs.atomic_write_bytes(out, buf.getvalue())
