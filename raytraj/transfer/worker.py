"""The computations a transfer needs, on whatever process holds the model and the data.

``TransferWorker`` is plain torch: the local backend runs one in-process, and the Ray backend
runs one inside each actor. Both therefore compute the same numbers. A worker is handed the
current permutation and a trajectory index; it builds the transferred point

    theta2^t = theta2^0 + pi(theta1^t - theta1^0)

itself, so only the permutation (a few integers per unit) crosses the wire per step.

With ``init_decay`` it builds c_t theta2^0 + pi(theta1^t - c_t theta1^0) instead, c_t the share of
its init a source tensor keeps (the projection <theta1^t, theta1^0> / |theta1^0|^2, in [0, 1]).
Under weight decay a trained tensor keeps only part of its init; the paper's rule keeps all of
theta2^0 and adds -(1 - c_t) pi(theta1^0): a second random init that no permutation aligns.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..data import Dataset, sample_batches
from ..evaluation import accuracy, has_batchnorm, recalibrate_bn
from ..finite import nonfinite_names
from ..models import build_model, logits_of
from ..perm import PermutationSpec
from ..perm.apply import permute_tensor
from ..runtime import resolve_device
from ..trajectory import Trajectory


def grad_batches_for(seed: int, step: int, t: int, n_train: int, batch_size: int, count: int) -> list[np.ndarray]:
    """The mini-batches of the gradient pair for trajectory point t at transfer step ``step``.

    A pure function of its arguments: any worker, in any run, resumed or not, draws the same.
    """
    return sample_batches(n_train, batch_size, count, np.random.default_rng([seed, 0, step, t]))


def mean_gradients(batches: Iterable[tuple[int, tuple[dict, dict]]], count: int) -> tuple[dict, dict]:
    """float32 means of per-batch (target, source) gradients given as (batch id, pair) in increasing id order.

    Summed in float64 from zero, one batch after another in batch order: the same additions in the
    same order wherever the batches were computed (one process, or any split over Ray workers), so
    the means, and the LAPs fed from them, are bit for bit the same.
    """
    target_sum: dict[str, torch.Tensor] = {}
    source_sum: dict[str, torch.Tensor] = {}
    last = -1
    for i, (target, source) in batches:
        if i <= last:
            raise ValueError(f"gradient batches must come in increasing batch order; got {i} after {last}")
        last = i
        for acc, grad in ((target_sum, target), (source_sum, source)):
            for n, g in grad.items():
                if n not in acc:
                    acc[n] = torch.zeros(g.shape, dtype=torch.float64, device=g.device)
                acc[n] += g
    return ({n: (v / count).float() for n, v in target_sum.items()},
            {n: (v / count).float() for n, v in source_sum.items()})


def val_subset_indices(seed: int, n_val: int, size: int) -> np.ndarray:
    """The val samples a run with ``val_subset=size`` evaluates on: drawn once from the seed, sorted."""
    return np.sort(np.random.default_rng([seed, 3]).choice(n_val, size, replace=False))


def bn_batches_for(seed: int, step: int, n_train: int, batch_size: int, count: int) -> list[np.ndarray]:
    return sample_batches(n_train, batch_size, count, np.random.default_rng([seed, 1, step]))


class TransferWorker:
    def __init__(self, model_cfg, data: Dataset, spec: PermutationSpec, trajectory: Trajectory,
                 target_init: Mapping[str, torch.Tensor], *, seed: int, batch_size: int, bn_batches: int,
                 eval_batch_size: int = 512, val_subset: int = 0, init_decay: bool = False,
                 device: torch.device | str | None = None):
        self.device = resolve_device(device)
        self.model = build_model(model_cfg, 0).to(self.device)
        self.data = data
        self.spec = spec
        self.trajectory = trajectory
        self.param_names = [n for n, _ in self.model.named_parameters()]
        self.target_init = {k: v.to(self.device) for k, v in target_init.items()}
        self.seed = seed
        self.init_decay = init_decay
        self.batch_size = batch_size
        self.bn_batches = bn_batches if has_batchnorm(self.model) else 0
        self._dropout = any(isinstance(m, nn.modules.dropout._DropoutNd) for m in self.model.modules())
        self.eval_batch_size = eval_batch_size
        # Per-step val accuracy only picks the best step: on large data a fixed subset is enough.
        self._eval_data = data
        if 0 < val_subset < data.size("val"):
            idx = torch.as_tensor(val_subset_indices(seed, data.size("val"), val_subset))
            self._eval_data = dataclasses.replace(data, x={**data.x, "val": data.x["val"][idx]},
                                                  y={**data.y, "val": data.y["val"][idx]})
        self._x = data.x["train"].to(self.device)
        self._y = data.y["train"].to(self.device)

    # -- states --------------------------------------------------------------------------------
    def source_point(self, t: int) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.trajectory.point(t).items()}

    def target_point(self, perm: Mapping[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
        """theta2^0 + pi(theta1^t - theta1^0) for parameters (scaled by init_share with init_decay);
        pi(theta1^t) for buffers."""
        start, point = self.source_point(0), self.source_point(t)
        out = {}
        for name, value in point.items():
            axes = self.spec.axes[name]
            if name in self.param_names:
                c = init_share(value, start[name]) if self.init_decay else 1.0
                out[name] = c * self.target_init[name] + permute_tensor(value - c * start[name], axes, perm)
            else:
                out[name] = permute_tensor(value, axes, perm)
        return out

    def materialize(self, perm, t: int, step: int | None = None) -> dict[str, torch.Tensor]:
        """The transferred state at point t, BatchNorm stats recalibrated (seeded by ``step``)."""
        state = self.target_point(perm, t)
        if self.bn_batches:
            batches = bn_batches_for(self.seed, t if step is None else step, self.data.size("train"),
                                     self.batch_size, self.bn_batches)
            state = recalibrate_bn(self.model, state, self.data, batches, self.device)
        return state

    # -- work items ----------------------------------------------------------------------------
    def gradient_batches(self, perm, step: int, t: int, batch_ids: Iterable[int], count: int
                         ) -> Iterator[tuple[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]]:
        """Per selected batch (of ``count``), in the order given: (batch id, (the transferred model's
        mean gradient on it, the source's)), float32, checked finite. See :func:`mean_gradients`."""
        batches = grad_batches_for(self.seed, step, t, self.data.size("train"), self.batch_size, count)
        target_state = self.target_point(perm, t)
        source_state = self.source_point(t)
        for i in batch_ids:
            key = (self.seed, step, t, i)
            target = self._gradient(target_state, batches[i], key)
            source = self._gradient(source_state, batches[i], key)
            for side, state, grad in (("transferred model", target_state, target), ("source", source_state, source)):
                check_gradient(grad, state, side, t, step)
            yield i, (target, source)

    def gradient_means(self, perm, step: int, t: int, count: int) -> tuple[dict, dict]:
        """The gradient pair of point t at transfer step ``step``: both models' gradients, averaged over
        ``count`` batches."""
        return mean_gradients(self.gradient_batches(perm, step, t, range(count), count), count)

    def _gradient(self, state, idx, key=None) -> dict[str, torch.Tensor]:
        # Train mode, as in training: BatchNorm normalises with the batch's own statistics.
        self.model.train()
        if self._dropout and key is not None:
            # Dropout masks seeded by the batch's identity: the same on any worker, resumed or not.
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(np.random.default_rng(list(key)).integers(2**62)))
                return self._gradient(state, idx)
        params = {n: state[n].detach().requires_grad_(True) for n in self.param_names}
        buffers = {n: v.clone() for n, v in state.items() if n not in params}
        idx_t = torch.as_tensor(idx, device=self.device)
        logits = logits_of(functional_call(self.model, {**params, **buffers}, (self._x[idx_t],)))
        loss = F.cross_entropy(logits, self._y[idx_t])
        grads = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, grads))

    def evaluate(self, perm, t: int, split: str = "val", step: int | None = None) -> float:
        state = self.materialize(perm, t, step)
        return accuracy(self.model, state, self._eval_data, split, self.eval_batch_size, self.device)


def init_share(value: torch.Tensor, init: torch.Tensor) -> float:
    """c in [0, 1]: the projection of ``value`` on ``init`` (1 for an all-zero init, e.g. biases)."""
    norm = float((init.double() ** 2).sum())
    if norm == 0.0:
        return 1.0
    return min(1.0, max(0.0, float((value.double() * init.double()).sum()) / norm))


def check_gradient(grad: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], side: str, t: int,
                   step: int) -> None:
    """A gradient pair must be finite before it enters the matching; name what overflowed and why.

    Args:
        grad: the summed gradient of ``side`` ("transferred model" or "source") at trajectory point ``t``.
        state: the weights it was taken at (the trajectory's points are checked when read).
    """
    bad = nonfinite_names(grad)
    if not bad:
        return
    weights = nonfinite_names({n: state[n] for n in grad})
    where = (f"its weights hold NaN or inf too ({weights[0]})" if weights else
             "though its weights are finite: the loss overflowed on these training batches")
    raise FloatingPointError(
        f"the gradient of the {side} at trajectory point {t} (transfer step {step}) holds NaN or inf in "
        f"{bad[0]}, {where}. Check the training data for extreme values, or record the source with a lower --lr "
        "(its weights grew too large); another --seed draws other batches")
