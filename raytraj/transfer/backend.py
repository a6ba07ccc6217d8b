"""Where a transfer's work runs: the interface the engine talks to, and nothing else.

A ``Backend`` gives the engine

* ``matcher(spec, cfg)``: a ``Matcher`` that owns the step's matching work: it computes the
  gradient pairs of a step, keeps the pair bank (in this process, or sharded over workers),
  picks its LAP solver, and solves (``raytraj.perm.solve``);
* ``evaluate``: accuracy of the transferred model at a point, as a handle, so a backend may
  overlap evaluation with the next step's gradients;
* ``materialize``: the transferred state itself, for saving;
* ``utilisation``: the share of time its workers computed, for the progress bar (None: no workers);
* ``report``: what the run folder's metrics record about the backend (the Ray backend's traffic
  and placement; the local backend's device);
* ``close``.

``raytraj.transfer.local.LocalBackend`` does everything in this process;
``raytraj.distributed.RayBackend`` spreads it over Ray actors. Both implement all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch

from ..perm import Permutation, PermutationSpec, SolveOptions
from .config import TransferConfig


@dataclass(frozen=True)
class GradRequest:
    t: int  # trajectory point
    step: int  # transfer step that asks (seeds the batches)


class Handle(Protocol):
    def done(self) -> bool:
        """Whether ``result()`` would return at once (the engine then reads it in its own step)."""
        ...

    def result(self) -> Any: ...


class Matcher(Protocol):
    """One transfer's matching work, step by step; the engine never sees gradients or cost matrices."""

    def step(self, s: int, prev: Mapping[str, torch.Tensor], requests: Sequence[GradRequest], count: int, *,
             fresh: bool, init: Mapping[str, torch.Tensor] | None,
             options: SolveOptions) -> tuple[Permutation, dict]:
        """Add the gradient pairs of ``requests`` (``count`` batches each, under ``prev``) to the bank
        (a new one if ``fresh``), then solve from ``init``; info holds the solve's and ``grad_s``."""
        ...

    def snapshot(self) -> tuple[list[tuple[dict, dict]], dict, dict]:
        """For the checkpoint: the pairs the last step added, the bank's caches, and a shard record."""
        ...

    def restore(self, pairs: list[tuple[dict, dict]], cache: dict, shards: dict) -> None:
        """Continue from a checkpoint (written by this backend or the other)."""
        ...


class Backend(Protocol):
    def matcher(self, spec: PermutationSpec, cfg: TransferConfig) -> Matcher: ...

    def evaluate(self, perm: Mapping[str, torch.Tensor], t: int, split: str = "val",
                 step: int | None = None) -> Handle: ...

    def materialize(self, perm: Mapping[str, torch.Tensor], t: int,
                    step: int | None = None) -> dict[str, torch.Tensor]: ...

    def utilisation(self) -> float | None: ...

    def report(self) -> dict: ...

    def close(self) -> None: ...
