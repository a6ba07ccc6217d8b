"""Scoring a state: accuracy and predictions, and BatchNorm recalibration after a transfer."""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from .data import Dataset
from .models.outputs import logits_of


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def predict(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, batch_size: int = 512,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Softmax probabilities of ``model`` at ``state`` on ``x``, in eval mode."""
    model.eval()
    state = {k: v.to(device) for k, v in state.items()}
    out = [torch.softmax(logits_of(functional_call(model, state, (x[i:i + batch_size].to(device),))), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def accuracy(model: nn.Module, state: Mapping[str, torch.Tensor], data: Dataset, split: str,
             batch_size: int = 512, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in percent."""
    probs = predict(model, state, data.x[split], batch_size, device)
    return 100.0 * float((probs.argmax(1) == data.y[split]).float().mean())


def chance_accuracy(data: Dataset, split: str = "val") -> float:
    """What always answering the most frequent class scores on ``split``, in percent."""
    counts = torch.bincount(data.y[split], minlength=data.num_classes)
    return 100.0 * float(counts.max()) / max(1, int(counts.sum()))


def at_chance_level(acc: float, chance: float) -> bool:
    """Within a tenth of the way from chance to perfect: a model that learned (almost) nothing."""
    return acc < chance + 0.1 * (100.0 - chance)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, state: Mapping[str, torch.Tensor], data: Dataset,
                   batches: Iterable[np.ndarray], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``state`` with BatchNorm running stats re-estimated on training batches.

    Stats are reset and averaged cumulatively (momentum None) over the batches, without
    augmentation. The modules' momentum is restored afterwards: the official code leaves it at
    None, which makes later fine-tuning keep a stale cumulative average.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return dict(state)
    state = {k: v.to(device).clone() for k, v in state.items()}
    model.load_state_dict(state)
    model.to(device)
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for idx in batches:
            x, _ = data.batch("train", idx)
            model(x.to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate_path(path: str, split: str = "test", which: str = "best", model=None, data=None) -> dict:
    """Accuracy of a saved model: a transfer run folder (its best or final model) or STORE[:STEP].

    ``model`` (a model config) and ``data`` (a data string or DataConfig) replace what the store records.
    """
    from .models import build_model
    from .recorded import data_of, model_of
    from .runfolder import RunFolder
    from .trajectory import TrajectoryStore, read_state

    run = RunFolder(path)
    if run.has_model(which):
        state, info = run.load_model(which)
        store = TrajectoryStore(info["source"])
        what = f"{path} ({which}, step {info['step']})"
    else:
        state, store, step = read_state(path)
        what = f"{store.location} step {step}"
    data = data_of(store, data)
    model = build_model(model_of(store, model), 0)
    return {"model": what, "split": split, "accuracy": accuracy(model, state, data, split)}
