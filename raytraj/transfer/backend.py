"""Where a transfer's work runs. The engine talks to this interface only.

* ``gradient_pairs``: mean gradients of the transferred and the source model at trajectory
  points, under the current permutation, on seeded batches.
* ``solve_laps``: one assignment problem per matrix (a colour class of permutation groups).
* ``evaluate``: accuracy of the transferred model at a point; returns a handle, so a backend
  may overlap evaluation with the next step's gradients.
* ``materialize``: the transferred state itself, for saving.

A backend may also offer ``matcher(spec, normalize)`` to keep the pair bank itself (see
``matcher.py``); the engine then never sees gradients. ``LocalBackend`` does everything in this process. ``raytraj.distributed.RayBackend`` spreads
it over Ray actors and tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch

from ..perm import solve_laps_serial
from .worker import TransferWorker


@dataclass(frozen=True)
class GradRequest:
    t: int  # trajectory point
    step: int  # transfer step that asks (seeds the batches)


class Handle(Protocol):
    def result(self) -> Any: ...


class Done:
    """A handle whose value is already known."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Backend(Protocol):
    def gradient_pairs(self, perm: Mapping[str, torch.Tensor], requests: Sequence[GradRequest],
                       count: int) -> list[tuple[dict, dict]]: ...

    def solve_laps(self, costs: Sequence[np.ndarray]) -> list[np.ndarray]: ...

    def evaluate(self, perm, t: int, split: str = "val", step: int | None = None) -> Handle: ...

    def materialize(self, perm, t: int, step: int | None = None) -> dict[str, torch.Tensor]: ...

    def close(self) -> None: ...


def finish_sums(target_sum: dict, source_sum: dict, count: int) -> tuple[dict, dict]:
    """Turn float64 gradient sums over ``count`` batches into float32 means."""
    return ({k: (v / count).float() for k, v in target_sum.items()},
            {k: (v / count).float() for k, v in source_sum.items()})


class LocalBackend:
    def __init__(self, worker: TransferWorker):
        self.worker = worker
        self.bank_device = worker.device  # the gradient pairs are made there; the pair bank stays there

    def gradient_pairs(self, perm, requests, count):
        ids = list(range(count))
        return [finish_sums(*self.worker.gradient_sums(perm, r.step, r.t, ids, count), count) for r in requests]

    def solve_laps(self, costs):
        return solve_laps_serial(costs)

    def evaluate(self, perm, t, split="val", step=None):
        return Done(self.worker.evaluate(perm, t, split, step))

    def materialize(self, perm, t, step=None):
        return {k: v.cpu() for k, v in self.worker.materialize(perm, t, step).items()}

    def close(self):
        pass
