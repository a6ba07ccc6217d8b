"""How a transfer's tensors, gradient work and LAPs are split over N workers (pure; no Ray).

* Tensors are owned by layer: the parameter list, in model order, is cut into N contiguous
  runs of about equal size. A worker keeps the pair-bank terms of the tensors it owns and ends
  each gradient reduce-scatter holding their summed gradients.
* Group g's LAP is solved on one of the workers holding its terms, the others send it theirs.
  The groups of a colour class (solved at the same time) go to different workers where they can,
  each to the one holding most of its terms (by size) among those still free in its class.
* A step's gradient work, (request, model, batch) units in order, is cut into N contiguous runs,
  one per worker; each worker sums its units per request and model, in float64.

With N = 1 everything lands on worker 0 and the plan is today's single-process algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..perm import PermutationSpec, color_groups


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
    solver, contributors, weights = {}, {}, {}
    for g, members in spec.groups.items():
        weight = np.zeros(workers)
        for name, _ in members:
            if name in owner:
                weight[owner[name]] += sizes[names.index(name)]
        contributors[g] = tuple(int(w) for w in np.flatnonzero(weight))
        weights[g] = weight
    # The groups of one colour class are solved at the same time: on different workers where their
    # contributors allow, each on the heaviest contributor not yet solving one of its class (ties: lowest index).
    for cls in color_groups(spec):
        taken: set[int] = set()
        for g in sorted(cls, key=lambda g: -spec.sizes[g]):
            w = weights[g]
            free = [k for k in contributors[g] if k not in taken]
            solver[g] = max(free, key=lambda k: (w[k], -k)) if free else int(np.argmax(w))
            taken.add(solver[g])
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


TARGET, SOURCE = 0, 1  # the two models of a gradient pair


def split_side_units(num_requests: int, count: int, workers: int) -> list[dict[tuple[int, int], list[int]]]:
    """Per worker: {(request index, side): batch ids} of its contiguous run of the step's units, a unit
    being one model's gradient on one batch: (request, side, batch), sides TARGET then SOURCE.

    Splitting a pair by model doubles the units without splitting a batch (so BatchNorm's batch
    statistics are untouched), and each model's sum stays its own chain in batch order: FGMT's
    single batch keeps two ranks busy, bit for bit as one process."""
    units = [(r, side, b) for r in range(num_requests) for side in (TARGET, SOURCE) for b in range(count)]
    out = []
    for run in np.array_split(np.arange(len(units)), workers):
        mine: dict[tuple[int, int], list[int]] = {}
        for u in run:
            r, side, b = units[int(u)]
            mine.setdefault((r, side), []).append(b)
        out.append(mine)
    return out
