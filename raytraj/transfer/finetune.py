"""Subsequent training of transferred parameters (paper section 4.2).

Starts from the run's best-on-val model (early stopping along the trajectory), recalibrated
BatchNorm included, and trains on the source's data with the source's recipe; ``--epochs``
and ``--lr`` override it (the paper uses a smaller initial lr than the source's).
"""

from __future__ import annotations

from ..config import from_dict, replace
from ..config import ConfigError
from ..data import DataConfig
from ..models import model_from_dict, rebuildable
from ..recorded import data_of, model_of
from ..runfolder import CONFIG, RunFolder
from ..train import TrainResult, train
from ..trajectory import is_store
from .problem import open_source
from .run import load_run_config


def finetune(run: str, out: str, *, epochs: int, lr: float | None = None, seed: int | None = None,
             which: str = "best", progress: bool = True, device=None, model=None, data=None) -> TrainResult:
    """Train on from a transfer run's model (subsequent training, paper section 4.2), recording a trajectory.

    Args:
        run: a finished transfer run folder.
        out: the trajectory store to write.
        epochs: epochs to train; the rest of the recipe is the source's (TrainConfig's defaults
            for a source recorded by a TrajectoryRecorder, which records no recipe).
        lr: the initial learning rate (default: the source's).
        seed: seeds the batch order (default: the transfer's seed).
        which: start from the ``best`` or the ``final`` transferred model.
        progress: show a progress bar.
        device: where to train (default: a GPU when there is one).
        model, data: replace what the store records.

    Returns:
        the TrainResult (val and test accuracy, timings).
    """
    folder = RunFolder(run)
    if not folder.started:
        if is_store(run):
            raise ConfigError(f"--from {run} is a trajectory store, not a transfer run folder; to train on from a "
                              f"store's step use `raytraj train --init {run}[:STEP] ...`")
        raise ConfigError(f"--from {run} is not a transfer run folder (it has no {CONFIG}); give the --out of a "
                          "`raytraj transfer`")
    if not folder.has_model(which):
        raise ConfigError(f"--from {run} holds an unfinished transfer (no {which} model yet); finish it with "
                          "`raytraj transfer ... --resume` first")
    record, cfg = load_run_config(run)
    source = open_source(record["source"])
    state, info = RunFolder(run).load_model(which)
    recipe = source.recipe()
    recipe = replace(recipe, epochs=epochs, **({"lr": lr} if lr is not None else {}))
    data = data_of(source, data if data is not None else _recorded_data(record))
    if model is None and rebuildable(record.get("model")):
        model = model_from_dict(record["model"])  # the transfer's own --model
    return train(model_of(source, model), data, recipe, cfg.seed if seed is None else seed, out,
                 init=state, init_info={"transfer_run": run, "which": which, "step": info.get("step")},
                 progress=progress, device=device)


def _recorded_data(record: dict):
    """The data a transfer run used instead of its store's (its --data), if any."""
    data = record.get("data")
    if data is None:
        return None
    if isinstance(data, dict):
        return from_dict(DataConfig, data, what="data config in the run")
    if data == "memory":
        raise ConfigError("this transfer ran on in-memory data (the Python API); pass the data again")
    return data
