"""Scoring points of weight space that are linear combinations of a few model states.

Every point the analysis commands visit (a point on a segment, a cell of a plane) is
``sum_i c_i * state_i`` over a handful of base states, so a work item is just the coefficient
vector. ``GridEvaluator`` builds the point, re-estimates BatchNorm statistics on training
batches (one fixed, seeded set for every point, so points differ only in their weights), and
returns loss and accuracy. ``evaluate_points`` runs the items in-process or, with
``backend="ray"``, on Ray actors that each hold one evaluator (``raytraj.distributed.grid``,
imported only then).
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..config import ConfigError
from ..data import Dataset, sample_batches
from ..evaluation import has_batchnorm, recalibrate_bn
from ..models import build_model, logits_of, model_from_dict
from ..progress import progress_bar
from ..ray_config import RayConfig
from ..runtime import resolve_device


@torch.no_grad()
def loss_and_accuracy(model: torch.nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (percent) of ``model`` at ``state`` on (x, y), eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = logits_of(functional_call(model, dict(state), (x[i:i + batch_size],)))
        loss += float(F.cross_entropy(logits.double(), y[i:i + batch_size], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    return loss / len(x), 100.0 * correct / len(x)


class GridEvaluator:
    """Holds a model, the data and the base states; scores ``sum_i c_i * bases[i]``.

    Args:
        model: model config dict, as a trajectory store records it.
        data: the dataset to score on.
        bases: the base states (same tensors, same shapes).
        splits: the splits to score, e.g. ("train", "val").
        bn_batches: training batches for BatchNorm recalibration (ignored without BatchNorm).
        batch_size: size of those batches.
        seed: fixes the recalibration batches.
        device: where to compute (default: cuda when available).
    """

    def __init__(self, model: dict, data: Dataset, bases: Sequence[Mapping[str, torch.Tensor]], *,
                 splits: Sequence[str] = ("train", "val"), bn_batches: int = 10, batch_size: int = 128,
                 seed: int = 0, device: torch.device | str | None = None):
        self.device = resolve_device(device)
        self.model = build_model(model_from_dict(model), 0).to(self.device)
        self.data = data
        self.bases = [{k: v.to(self.device) for k, v in b.items()} for b in bases]
        self.splits = tuple(splits)
        self.bn = [] if not has_batchnorm(self.model) or bn_batches == 0 else sample_batches(
            data.size("train"), batch_size, bn_batches, np.random.default_rng([seed, 7]))
        self._xy = {s: (data.x[s].to(self.device), data.y[s].to(self.device)) for s in self.splits}

    def state(self, coeffs: Sequence[float]) -> dict[str, torch.Tensor]:
        if len(coeffs) != len(self.bases):
            raise ValueError(f"{len(coeffs)} coefficients for {len(self.bases)} base states")
        out = {}
        for name, first in self.bases[0].items():
            if first.is_floating_point():
                # float64 accumulation: a point equal to a base state is that state, bit for bit
                acc = sum(float(c) * b[name].double() for c, b in zip(coeffs, self.bases) if c != 0)
                if not torch.is_tensor(acc):  # every coefficient zero
                    acc = torch.zeros_like(first, dtype=torch.float64)
                out[name] = acc.to(first.dtype)
            else:
                out[name] = first.clone()  # counters such as num_batches_tracked
        return out

    def evaluate(self, coeffs: Sequence[float]) -> dict[str, float]:
        """``{split}_loss`` and ``{split}_acc`` for every split, at the point ``coeffs``."""
        state = self.state(coeffs)
        if self.bn:
            state = recalibrate_bn(self.model, state, self.data, self.bn, self.device)
        out = {}
        for split, (x, y) in self._xy.items():
            out[f"{split}_loss"], out[f"{split}_acc"] = loss_and_accuracy(self.model, state, x, y)
        return out


def point_note(result: dict) -> dict:
    """A point's val loss and accuracy, as its progress line shows them."""
    return {k: f"{result[k]:.3f}" if k.endswith("loss") else f"{result[k]:.2f}"
            for k in ("val_loss", "val_acc") if k in result}


def evaluate_points(evaluator_args: dict, points: Sequence[Sequence[float]], *, backend: str = "local",
                    device: str | None = None, ray_config: RayConfig | None = None, progress: bool = True,
                    desc: str = "points") -> list[dict]:
    """Score every coefficient vector in ``points``, in order.

    Args:
        evaluator_args: keyword arguments of :class:`GridEvaluator`.
        points: one coefficient vector per point.
        backend: ``local`` (this process) or ``ray`` (actors; see ``raytraj.distributed.grid``).
        device: the local backend's device (default: cuda when available).
        ray_config: the Ray backend's actors and cluster (default: ``RayConfig()``).
        progress: show a progress bar.
        desc: the progress bar's label.
    """
    if backend == "local":
        if ray_config is not None:
            raise ConfigError("ray_config only applies to backend='ray'")
        evaluator = GridEvaluator(**evaluator_args, device=device)
        bar = progress_bar(len(points), desc=desc, enabled=progress, unit="point")
        results = []
        for c in points:
            results.append(evaluator.evaluate(c))
            bar.set_postfix(**point_note(results[-1]))
            bar.update(1)
        bar.close()
        return results
    if backend == "ray":
        if device is not None:
            raise ConfigError("device is for backend='local'; Ray actors use the GPUs they hold")
        from ..distributed.grid import evaluate_points_ray  # Ray is imported only when asked for

        return evaluate_points_ray(functools.partial(GridEvaluator, **evaluator_args), points,
                                   ray_config or RayConfig(), progress=progress, desc=desc, note=point_note)
    raise ConfigError(f"unknown backend {backend!r}; choose local or ray")
