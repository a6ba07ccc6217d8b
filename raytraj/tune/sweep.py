"""``raytraj sweep``: tune the transfer itself with Ray Tune.

Search over TransferConfig fields (steps, grad_batches, method, schedule, ...) and the subsequent
training (finetune_epochs, finetune_lr) by grid or random search; trials are ranked by the val
accuracy of what they hand over: the trained-on model's, else the best along the trajectory. With
ASHA, poor trials stop early along the trajectory (the fraction of it transferred is ASHA's time axis).

    OUT/trials/TRIAL_ID/     each trial's transfer run folder
    OUT/results.parquet      one row per trial (also results.csv), and OUT/best.json
"""

from __future__ import annotations

import dataclasses
import math
import typing

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from .. import fs
from ..config import ConfigError, to_dict
from ..trajectory import is_store
from ..transfer import TransferConfig
from ..recipes import check_finetune
from ..transfer.problem import check_targets
from ..writelock import locks_output
from .runner import check_trial_options, refuse_unfinished, result_rows, run_experiment
from .trial import FINISHED, TIME_ATTR

# Searched besides TransferConfig's fields: the subsequent training of each trial's transfer.
FINETUNE_FIELDS = {"finetune_epochs": int, "finetune_lr": float}
SWEEPABLE = ("steps", "schedule", "method", "grad_batches", "batch_size", "warm_start", "normalize", "bn_batches",
             "max_sweeps", "step_sweeps", "rtol", "eval_every", "val_subset", "seed", *FINETUNE_FIELDS)
METRIC = "best_val_acc"
# Ranks the trials: the val accuracy of what a trial hands over, its subsequent training's where
# it trains on (finetune_val_acc), else the transfer's best along the trajectory.
RANK = "member_val_acc"


def parse_params(items: list[str]) -> dict[str, list]:
    """``["steps=10,20", "method=gmt,fgmt"]`` -> {"steps": [10, 20], "method": ["gmt", "fgmt"]}, typed."""
    hints = {**typing.get_type_hints(TransferConfig), **FINETUNE_FIELDS}
    params: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected NAME=V1,V2,...")
        if name not in SWEEPABLE:
            raise ConfigError(f"--param {name!r} cannot be swept; choose from {', '.join(SWEEPABLE)}")
        if name in params:
            raise ConfigError(f"--param {name} is given twice")
        raw = [v.strip() for v in values.split(",") if v.strip()]
        if not raw:
            raise ConfigError(f"--param {name} has an empty grid; give at least one value")
        params[name] = [_typed(name, v, hints[name]) for v in raw]
        for v in params[name]:
            if name in FINETUNE_FIELDS:
                check_finetune(**{name: v})
            else:
                dataclasses.replace(TransferConfig(), **{name: v})  # each value alone must make a valid config
    if not params:
        raise ConfigError("a sweep needs at least one --param NAME=V1,V2,...")
    return params


def _typed(name: str, text: str, hint):
    kind = next((t for t in (bool, int, float, str) if t is hint or t in typing.get_args(hint)), str)
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        return kind(text)
    except ValueError:
        raise ConfigError(f"--param {name}: {text!r} is not a valid {kind.__name__}") from None


@locks_output("out", what="sweep")
def run_sweep(source: str, out: str, params: dict[str, list], *, base: TransferConfig, target: dict,
              samples: int = 1, search: str = "grid", scheduler: str | None = None, storage: str | None = None,
              cpus_per_trial: float = 1, gpus_per_trial: float | None = None, max_concurrent: int | None = None,
              max_failures: int = 2, resume: bool = False, address: str | None = None,
              runtime_env: dict | None = None, finetune_epochs: int = 0,
              finetune_lr: float | None = None) -> list[dict]:
    """Tune the TransferConfig fields in ``params`` (see the module docstring); one row per trial.

    Args:
        params: searched values of TransferConfig fields, and of ``finetune_epochs`` and
            ``finetune_lr`` (the subsequent training, as ``raytraj ensemble`` does it).
        finetune_epochs, finetune_lr: the subsequent training of every trial, where not searched.
            With subsequent training the trials are ranked by its val accuracy.
        target: ``{"target_seed": S}`` or ``{"target_init": STORE[:STEP], "new_head": bool}``;
            it must differ from the source's own init.
        scheduler: None, or "asha": early stopping along the fraction of the trajectory done.
        gpus_per_trial: None takes one GPU per trial when the cluster has GPUs, else none.
        runtime_env: Ray's runtime_env (``working_dir``, ``py_modules``) for a user model's modules.

    Returns:
        one row per trial (its searched values, val and test accuracy, steps run, status,
        seconds), best first; also written under ``out``.
    """
    source, out = fs.absolute(source), fs.absolute(out)
    if "target_init" in target:
        target = {**target, "target_init": fs.absolute(target["target_init"])}
    if is_store(out):
        raise ConfigError(f"--out {out} is a trajectory store; a sweep needs a folder of its own")
    check_trial_options(cpus_per_trial, gpus_per_trial, max_concurrent)
    check_targets(source, [target], base.seed)  # the source is usable, its model rebuilds, the target differs
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if search not in ("grid", "random"):
        raise ConfigError(f"--search must be grid or random, got {search!r}")
    check_finetune(finetune_epochs, finetune_lr)
    space = {k: (tune.grid_search(v) if search == "grid" else tune.choice(v)) for k, v in params.items()}
    finetuned = finetune_epochs > 0 or any(v > 0 for v in params.get("finetune_epochs", []))
    sched = None
    if scheduler == "asha":
        # The time axis is the fraction of the trajectory done, so that a swept ``steps`` does not cut
        # the longer runs by construction. The last rung is 1.0, which trials reach only with their
        # final report: Tune must not stop them there (stop_last_trials) before their results exist.
        sched = ASHAScheduler(time_attr=TIME_ATTR, max_t=1.0, grace_period=0.25, reduction_factor=2,
                              stop_last_trials=False)
    elif scheduler is not None:
        raise ConfigError(f"--scheduler must be asha, got {scheduler!r}")
    if sched is not None and finetuned:
        raise ConfigError("--scheduler asha stops trials on the transfer's val accuracy, before any subsequent "
                          "training: drop it, or sweep without finetune_epochs")
    # The base without the searched fields: their base values are never used.
    fixed = {k: v for k, v in to_dict(base).items() if k not in params}
    settings = {"source": source, "out": out, "target": target, "transfer": fixed,
                "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr,
                "params": params, "samples": samples, "search": search, "scheduler": scheduler}
    searched = {"transfer": {k: v for k, v in space.items() if k not in FINETUNE_FIELDS},
                **{k: v for k, v in space.items() if k in FINETUNE_FIELDS}}
    expected = samples * (math.prod(len(v) for v in params.values()) if search == "grid" else 1)
    grid = run_experiment(
        "sweep", searched, settings=settings,
        out=out, storage=storage, resume=resume, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=samples, scheduler=sched,
                                    max_concurrent_trials=max_concurrent, reuse_actors=False),
        max_failures=max_failures, address=address, runtime_env=runtime_env, trials=expected,
    )
    results = result_rows(grid)
    refuse_unfinished([r for r in results if r["status"] != "error" or not r["metrics"]], "sweep trials",
                      expected - sum(1 for r in results if r["status"] == "error" and r["metrics"]))
    rows = []
    for r in results:
        m = r["metrics"]
        rows.append({
            "trial_id": m.get("trial_id") or r["path"].rsplit("/", 1)[-1],
            **{k: (r["config"] if k in FINETUNE_FIELDS else r["config"]["transfer"])[k] for k in params},
            METRIC: m.get(METRIC),
            "final_val_acc": m.get("val_acc") if m.get(FINISHED) else None,
            "test_acc": m.get("test_acc"),
            **({"finetune_val_acc": m.get("finetune_val_acc"), "finetune_test_acc": m.get("finetune_test_acc")}
               if finetuned else {}),
            RANK: m.get("finetune_val_acc", m.get(METRIC)),
            "steps_run": m.get("step"),
            "status": r["status"],
            "seconds": m.get("time_total_s"),
            "cpu_s": m.get("cpu_s"),
        })
    rows.sort(key=lambda row: -(row[RANK] if row[RANK] is not None else float("-inf")))
    write_results(out, rows, list(params))
    return rows


def write_results(out: str, rows: list[dict], params: list[str]) -> None:
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    fs.atomic_write_bytes(fs.join(out, "results.parquet"), sink.getvalue().to_pybytes())
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    fs.atomic_write_bytes(fs.join(out, "results.csv"), sink.getvalue().to_pybytes())
    best = rows[0]
    fs.atomic_write_json(fs.join(out, "best.json"), {"config": {k: best[k] for k in params}, METRIC: best[METRIC],
                                                     RANK: best[RANK],
                                                     "trial_id": best["trial_id"]})


def format_results(rows: list[dict], params: list[str]) -> str:
    cols = ["trial_id", *params, METRIC, "final_val_acc",
            *(["finetune_val_acc"] if any("finetune_val_acc" in r for r in rows) else []), "cpu_s", "steps_run",
            "status"]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def format_best(rows: list[dict], params: list[str]) -> str:
    """The best trial as the table's own row under its header (rows are sorted best first)."""
    header, _, row = format_results(rows, params).splitlines()[:3]
    return f"best:\n{header}\n{row}"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)
