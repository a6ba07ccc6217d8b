"""The local backend: everything in this process, on its device (a GPU when there is one).

``LocalMatcher`` owns the step's matching work: it asks its ``TransferWorker`` for the gradient
pairs, keeps them in one ``PairBank`` where they were computed, and picks the LAP solver for
that device (``cfg.lap``). Only n x n cost matrices move, and only when the LAPs are solved on
the CPU.
"""

from __future__ import annotations

import torch

from ..perm import PairBank, PermutationSpec, lap_solver
from . import clock
from .bank_shard import read_shards
from .config import TransferConfig
from .worker import TransferWorker


class _Done:
    """A handle whose value is already known."""

    def __init__(self, value):
        self.value = value

    def done(self):
        return True

    def result(self):
        return self.value


class LocalMatcher:
    """A ``Matcher`` whose pair bank lives in this process, next to the worker that computes the pairs."""

    def __init__(self, worker: TransferWorker, spec: PermutationSpec, cfg: TransferConfig):
        self.worker, self.spec, self.normalize = worker, spec, cfg.normalize
        self.device = worker.device
        self.solve_laps = lap_solver(cfg.lap, self.device)
        self.dtype = getattr(torch, cfg.bank_dtype)
        # FGMT adds one pair per step: T slots up front (GMT's bank per step is sized by its step).
        self.bank = self._new_bank(cfg.steps if cfg.method == "fgmt" else None)
        self._new: list[tuple[dict, dict]] = []

    def _new_bank(self, capacity: int | None = None) -> PairBank:
        return PairBank(self.spec, normalize=self.normalize, device=self.device, dtype=self.dtype, capacity=capacity)

    def step(self, s, prev, requests, count, *, fresh, init, options):
        start = clock.now()
        self._new = [self.worker.gradient_means(prev, r.step, r.t, count) for r in requests]
        grad = clock.now()
        if fresh:
            self.bank = self._new_bank(len(requests))
        for target, source in self._new:
            self.bank.add(target, source)
        perm, info = self.bank.solve(init=init, options=options, solve_laps=self.solve_laps)
        return perm, {**info, "grad_s": grad[0] - start[0], "grad_cpu_s": grad[1] - start[1]}

    def memory(self) -> dict[str, int]:
        """The pair bank's bytes (pairs, caches)."""
        return self.bank.memory_bytes()

    def snapshot(self):
        new = self._new
        if not self.normalize and self.dtype != torch.float32:
            # The bank keeps only the rounded values, so a resume that adds these back rebuilds it bit for bit
            # (normalising divides by the unrounded norms first: those pairs stay as they came).
            new = [tuple({k: v.to(self.dtype) for k, v in side.items()} for side in pair) for pair in new]
        return new, self.bank.cache_state(), {}

    def restore(self, pairs, cache, shards):
        if shards:  # a run begun on the Ray backend, resumed here
            pairs, cache = read_shards(shards)
        for target, source in pairs:
            self.bank.add(target, source)
        self.bank.load_cache_state(cache)


class LocalBackend:
    """A ``Backend`` that runs one ``TransferWorker`` in this process."""

    def __init__(self, worker: TransferWorker):
        self.worker = worker

    def matcher(self, spec: PermutationSpec, cfg: TransferConfig) -> LocalMatcher:
        return LocalMatcher(self.worker, spec, cfg)

    def evaluate(self, perm, t, split="val", step=None):
        return _Done(self.worker.evaluate(perm, t, split, step))

    def materialize(self, perm, t, step=None):
        return {k: v.cpu() for k, v in self.worker.materialize(perm, t, step).items()}

    def utilisation(self) -> None:
        return None  # no workers: the progress bar shows no share

    def report(self) -> dict:
        return {}

    def close(self):
        pass
