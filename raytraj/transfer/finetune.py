"""Subsequent training of transferred parameters (paper section 4.2).

Starts from the run's best-on-val model (early stopping along the trajectory), recalibrated
BatchNorm included, and trains on the source's data with the source's recipe; ``--epochs``
and ``--lr`` override it (the paper uses a smaller initial lr than the source's).
"""

from __future__ import annotations

from .. import fs
from ..checkpoint import load_checkpoint
from ..config import from_dict, replace
from ..data import DataConfig, load_data
from ..models import model_from_dict
from ..train import TrainConfig, TrainResult, train
from .problem import open_source
from .run import load_run_config


def finetune(run: str, out: str, *, epochs: int, lr: float | None = None, seed: int | None = None,
             which: str = "best", progress: bool = True, device=None) -> TrainResult:
    record, cfg = load_run_config(run)
    source = open_source(record["source"])
    state, info = load_checkpoint(fs.join(run, f"{which}.safetensors"))
    recipe = from_dict(TrainConfig, source.meta["recipe"])
    recipe = replace(recipe, epochs=epochs, **({"lr": lr} if lr is not None else {}))
    data = load_data(from_dict(DataConfig, source.meta["data"]))
    return train(model_from_dict(source.meta["model"]), data, recipe, cfg.seed if seed is None else seed, out,
                 init=state, init_info={"transfer_run": run, "which": which, "step": info.get("step")},
                 progress=progress, device=device)
