"""``raytraj sweep``: tune the transfer itself with Ray Tune.

Search over TransferConfig fields (steps, grad_batches, method, schedule, ...) by grid or random
search; the metric is the best val accuracy along the trajectory. With ASHA, poor trials stop
early along the transfer steps (``step`` is ASHA's time axis).

    OUT/trials/TRIAL_ID/     each trial's transfer run folder
    OUT/results.parquet      one row per trial (also results.csv), and OUT/best.json
"""

from __future__ import annotations

import dataclasses
import typing

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from .. import fs
from ..config import ConfigError, to_dict
from ..transfer import TransferConfig
from ..recorded import model_of
from ..transfer.problem import open_source
from .runner import result_rows, run_experiment

SWEEPABLE = ("steps", "schedule", "method", "grad_batches", "batch_size", "warm_start", "normalize", "bn_batches",
             "max_sweeps", "seed")
METRIC = "best_val_acc"


def parse_params(items: list[str]) -> dict[str, list]:
    """``["steps=10,20", "method=gmt,fgmt"]`` -> {"steps": [10, 20], "method": ["gmt", "fgmt"]}, typed."""
    hints = typing.get_type_hints(TransferConfig)
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


def run_sweep(source: str, out: str, params: dict[str, list], *, base: TransferConfig, target: dict,
              samples: int = 1, search: str = "grid", scheduler: str | None = None, storage: str | None = None,
              cpus_per_trial: float = 1, gpus_per_trial: float = 0, max_concurrent: int | None = None,
              max_failures: int = 2, resume: bool = False, address: str | None = None,
              runtime_env: dict | None = None) -> list[dict]:
    source, out = fs.absolute(source), fs.absolute(out)
    if "target_init" in target:
        target = {**target, "target_init": fs.absolute(target["target_init"])}
    model_of(open_source(source))  # the source is usable and its model can be rebuilt
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    if search not in ("grid", "random"):
        raise ConfigError(f"--search must be grid or random, got {search!r}")
    space = {k: (tune.grid_search(v) if search == "grid" else tune.choice(v)) for k, v in params.items()}
    sched = None
    if scheduler == "asha":
        max_t = max(params.get("steps", [base.steps or 1]))
        sched = ASHAScheduler(time_attr="step", max_t=max_t, grace_period=max(1, max_t // 8), reduction_factor=2)
    elif scheduler is not None:
        raise ConfigError(f"--scheduler must be asha, got {scheduler!r}")
    grid = run_experiment(
        "sweep",
        {"source": source, "out": out, "target": target, "transfer": {**to_dict(base), **space}},
        out=out, storage=storage, resume=resume, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", num_samples=samples, scheduler=sched,
                                    max_concurrent_trials=max_concurrent, reuse_actors=False),
        max_failures=max_failures, address=address, runtime_env=runtime_env,
    )
    rows = []
    for r in result_rows(grid):
        m = r["metrics"]
        rows.append({
            "trial_id": m.get("trial_id") or r["path"].rsplit("/", 1)[-1],
            **{k: r["config"]["transfer"][k] for k in params},
            METRIC: m.get(METRIC),
            "final_val_acc": m.get("val_acc") if m.get("done") else None,
            "test_acc": m.get("test_acc"),
            "steps_run": m.get("step"),
            "status": "finished" if m.get("done") else ("error" if r["error"] else "stopped early"),
            "seconds": m.get("time_total_s"),
        })
    rows.sort(key=lambda row: -(row[METRIC] if row[METRIC] is not None else float("-inf")))
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
                                                     "trial_id": best["trial_id"]})


def format_results(rows: list[dict], params: list[str]) -> str:
    cols = ["trial_id", *params, METRIC, "final_val_acc", "steps_run", "status"]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)
