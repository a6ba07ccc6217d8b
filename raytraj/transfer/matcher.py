"""One transfer step's matching work: gradient pairs into a pair bank, then the solve.

The engine drives a ``Matcher``; where its pairs live is the backend's business.
``LocalMatcher`` keeps one ``PairBank`` in this process and asks the backend for gradient
pairs (today's algorithm). The Ray backend's matcher keeps the bank sharded by tensor on its
workers and never brings gradients or cost matrices to the driver.
"""

from __future__ import annotations

import time
from typing import Mapping, Protocol, Sequence

import torch

from ..perm import PairBank, Permutation, PermutationSpec
from .backend import GradRequest
from .bank_shard import read_shards


class Matcher(Protocol):
    def step(self, s: int, prev: Mapping[str, torch.Tensor], requests: Sequence[GradRequest], count: int, *,
             fresh: bool, init, max_sweeps: int, tol: float, rtol: float, seed: int) -> tuple[Permutation, dict]:
        """Add the step's gradient pairs (to a new bank if ``fresh``), then solve; info holds grad_s."""
        ...

    def snapshot(self) -> tuple[list[tuple[dict, dict]], dict, dict]:
        """For the checkpoint: the pairs the last step added, the bank's caches, and a shard record."""
        ...

    def restore(self, pairs: list[tuple[dict, dict]], cache: dict, shards: dict) -> None: ...


class LocalMatcher:
    def __init__(self, backend, spec: PermutationSpec, normalize: bool, *, device=None, solve_laps=None):
        """``device``: where the bank keeps its pairs; ``solve_laps``: the LAP solver (default the backend's)."""
        self.backend, self.spec, self.normalize, self.device = backend, spec, normalize, device
        self.solve_laps = solve_laps or backend.solve_laps
        self.bank = PairBank(spec, normalize=normalize, device=device)
        self._new: list[tuple[dict, dict]] = []

    def step(self, s, prev, requests, count, *, fresh, init, max_sweeps, tol, rtol, seed):
        t0 = time.perf_counter()
        self._new = self.backend.gradient_pairs(prev, requests, count)
        grad_s = time.perf_counter() - t0
        if fresh:
            self.bank = PairBank(self.spec, normalize=self.normalize, device=self.device)
        for target, source in self._new:
            self.bank.add(target, source)
        perm, info = self.bank.solve(init=init, max_sweeps=max_sweeps, tol=tol, rtol=rtol, seed=seed,
                                     solve_laps=self.solve_laps)
        return perm, {**info, "grad_s": grad_s}

    def snapshot(self):
        return self._new, self.bank.cache_state(), {}

    def restore(self, pairs, cache, shards):
        if shards:  # a run begun on the Ray backend, resumed here
            pairs, cache = read_shards(shards)
        for target, source in pairs:
            self.bank.add(target, source)
        self.bank.load_cache_state(cache)
