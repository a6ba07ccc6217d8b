"""The local backend: everything in this process, on its device (a GPU when there is one).

``LocalMatcher`` owns the step's matching work: it asks its ``TransferWorker`` for the gradient
pairs, keeps them in one ``PairBank`` where they were computed, and picks the LAP solver for
that device (``cfg.lap``). Only n x n cost matrices move, and only when the LAPs are solved on
the CPU.
"""

from __future__ import annotations

import time

from ..perm import PairBank, PermutationSpec, lap_solver
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
        self.bank = self._new_bank()
        self._new: list[tuple[dict, dict]] = []

    def _new_bank(self) -> PairBank:
        return PairBank(self.spec, normalize=self.normalize, device=self.device)

    def step(self, s, prev, requests, count, *, fresh, init, options):
        t0 = time.perf_counter()
        self._new = [self.worker.gradient_means(prev, r.step, r.t, count) for r in requests]
        grad_s = time.perf_counter() - t0
        if fresh:
            self.bank = self._new_bank()
        for target, source in self._new:
            self.bank.add(target, source)
        perm, info = self.bank.solve(init=init, options=options, solve_laps=self.solve_laps)
        return perm, {**info, "grad_s": grad_s}

    def snapshot(self):
        return self._new, self.bank.cache_state(), {}

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
