"""Colour the spec's group graph: groups that share no tensor can be solved at the same time.

Within a coordinate-descent sweep, the cost matrix of group g depends only on the groups that
share a tensor with g. Groups of one colour share none, so solving a colour class's LAPs
together (in parallel) gives exactly what solving them one after another would. A sweep visits
the colour classes in a seeded random order; that order is the algorithm, on one machine or many.
"""

from __future__ import annotations

import numpy as np

from .spec import PermutationSpec


def color_groups(spec: PermutationSpec) -> list[list[str]]:
    """Greedy colouring, most-constrained group first; deterministic for a given spec."""
    conflicts = spec.conflicts()
    position = {g: i for i, g in enumerate(spec.sizes)}
    color: dict[str, int] = {}
    for g in sorted(spec.sizes, key=lambda g: (-len(conflicts[g]), position[g])):
        taken = {color[h] for h in conflicts[g] if h in color}
        color[g] = next(c for c in range(len(spec.sizes) + 1) if c not in taken)
    n_colors = max(color.values(), default=-1) + 1
    return [[g for g in spec.sizes if color[g] == c] for c in range(n_colors)]


def sweep_order(classes: list[list[str]], rng: np.random.Generator) -> list[list[str]]:
    """One sweep's visiting order: the classes shuffled, and the groups within each."""
    order = [list(classes[i]) for i in rng.permutation(len(classes))]
    for cls in order:
        rng.shuffle(cls)
    return order
