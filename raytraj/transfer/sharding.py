"""How a transfer's tensors, gradient work and LAPs are split over N workers (pure; no Ray).

* Tensors are owned by layer: the parameter list, in model order, is cut into N contiguous
  runs of about equal size. A worker keeps the pair-bank terms of the tensors it owns and ends
  each gradient reduce-scatter holding their summed gradients.
* Group g's LAP is solved on the worker that owns the most of g's terms (by term size); the
  others send it their partial terms.
* A step's gradient work, (request, batch) units in order, is cut into N contiguous runs, one
  per worker; each worker sums its units per request, in float64.

With N = 1 everything lands on worker 0 and the plan is today's single-process algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..perm import PermutationSpec


@dataclass(frozen=True)
class ShardPlan:
    workers: int
    owner: dict[str, int]  # tensor name -> worker
    solver: dict[str, int]  # group -> worker that solves its LAP
    contributors: dict[str, tuple[int, ...]]  # group -> workers holding any of its terms

    def owned(self, worker: int) -> list[str]:
        return [n for n, w in self.owner.items() if w == worker]

    def groups_of(self, worker: int, groups) -> list[str]:
        """The groups among ``groups`` to which ``worker`` contributes terms, in the given order."""
        return [g for g in groups if worker in self.contributors[g]]


def plan_shards(spec: PermutationSpec, shapes: dict[str, tuple[int, ...]], workers: int) -> ShardPlan:
    """Owners by contiguous layer runs of about equal element count; solvers by term weight."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    names = list(shapes)
    sizes = np.array([int(np.prod(shapes[n])) if shapes[n] else 1 for n in names], dtype=np.float64)
    # Tensor i goes to the worker whose equal share of the running total holds its midpoint.
    mid = np.cumsum(sizes) - sizes / 2
    owner = {n: min(workers - 1, int(m / sizes.sum() * workers)) for n, m in zip(names, mid)}
    solver, contributors = {}, {}
    for g, members in spec.groups.items():
        weight = np.zeros(workers)
        for name, _ in members:
            if name in owner:
                weight[owner[name]] += sizes[names.index(name)]
        contributors[g] = tuple(int(w) for w in np.flatnonzero(weight))
        solver[g] = int(np.argmax(weight))  # ties: the lowest index
    return ShardPlan(workers, owner, solver, contributors)


def split_units(num_requests: int, count: int, workers: int) -> list[dict[int, list[int]]]:
    """Per worker: {request index: batch ids} of its contiguous run of the step's units."""
    units = [(r, b) for r in range(num_requests) for b in range(count)]
    out = []
    for run in np.array_split(np.arange(len(units)), workers):
        mine: dict[int, list[int]] = {}
        for u in run:
            r, b = units[int(u)]
            mine.setdefault(r, []).append(b)
        out.append(mine)
    return out
