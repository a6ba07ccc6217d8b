"""Running a Tune experiment of transfer trials: storage, resources, failures, and restore."""

from __future__ import annotations

import os

from ray import tune

from .. import fs
from ..config import ConfigError
from ..distributed.cluster import connect
from .trial import transfer_trial


def storage_root(out: str, storage: str | None) -> str:
    """Where Tune keeps experiment state: ``--storage`` (a path, s3:// or gs://) or OUT/tune."""
    return fs.absolute(storage or fs.join(out, "tune"))


def run_experiment(name: str, param_space: dict, *, out: str, storage: str | None, resume: bool,
                   cpus_per_trial: float, gpus_per_trial: float, tune_config: tune.TuneConfig,
                   max_failures: int = 2, address: str | None = None,
                   runtime_env: dict | None = None) -> tune.ResultGrid:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # snapshot experiment state often: cheap here
    connect(address, runtime_env=runtime_env)
    root = storage_root(out, storage)
    path = fs.join(root, name)
    trainable = tune.with_resources(transfer_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    if resume:
        if not tune.Tuner.can_restore(path):
            raise ConfigError(f"nothing to resume: no Tune experiment at {path}")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        if tune.Tuner.can_restore(path):
            raise ConfigError(f"{path} already holds this experiment; pass --resume to continue it, or choose "
                              "another --out/--storage")
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=1,
            ),
        )
    return tuner.fit()


def result_rows(grid: tune.ResultGrid) -> list[dict]:
    """One row per trial: its config's searched values and last reported metrics."""
    rows = []
    for result in grid:
        if result.error and not result.metrics:
            raise RuntimeError(f"trial {result.path} failed: {result.error}")
        rows.append({"config": result.config, "metrics": dict(result.metrics or {}), "path": result.path,
                     "error": str(result.error) if result.error else None})
    return rows
