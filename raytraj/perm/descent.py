"""The solve flow of a matching, wherever its pairs live: block start, descent, block restart.

``solve(spec, costs, options)`` maximises  sum over pairs of <target, perm(source)>  by Git
Re-Basin coordinate descent (one LAP per permutation group, a colour class at a time). It
never sees a pair: ``costs`` (the :class:`Costs` protocol) builds and solves a colour class's
cost matrices, scores head blocks and reads the objective. The local ``PairBank`` supplies them
in this process (``perm.matching.BankCosts``); the Ray backend supplies them from bank shards on
its workers. So the flow, its sweep budget and its ``converged`` flag live here only.

Segmented axes (attention heads x head dims): a head group's cost depends on the within-head
permutation and the other way round, so descent from the identity can settle on the wrong
heads. ``solve`` therefore tries a block start (heads assigned by each head pair's best
within-head matching) before descent, and again after it, descending again from a block start
that raises the objective. ``options.max_sweeps`` caps the sweeps of all those descents together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..config import ConfigError
from .apply import Permutation, identity_permutation
from .coloring import color_groups, sweep_order
from .spec import PermutationSpec, axis_groups

# Per group of a colour class: (new assignment, its value on the group's cost matrix, the
# current assignment's value), then the seconds spent building costs and solving LAPs.
ClassResult = tuple[list[tuple[np.ndarray, float, float]], float, float]


@dataclass(frozen=True)
class SolveOptions:
    """When coordinate descent stops, and its group order.

    Args:
        max_sweeps: sweeps allowed in one solve, over all its descents (block restarts included).
        tol: stop after a sweep whose gain in the objective is at most ``tol`` ...
        rtol: ... or at most ``rtol`` x |the permuted part of the objective| (0: ``tol`` alone).
            Inner products of tensors no permutation touches are left out: they do not move.
        seed: seeds the order in which each sweep visits the colour classes.
    """

    max_sweeps: int = 100
    tol: float = 1e-7
    rtol: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.max_sweeps, bool) or not isinstance(self.max_sweeps, int) or self.max_sweeps < 1:
            raise ConfigError(f"max_sweeps must be an integer >= 1, got {self.max_sweeps!r}")
        for name in ("tol", "rtol"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")


class Costs(Protocol):
    """What a solve needs from wherever the pairs live (one bank, or shards on Ray workers)."""

    device: torch.device | str | None  # where the permutations are kept during the solve

    def solve_class(self, groups: list[str], perm: Mapping[str, torch.Tensor]) -> ClassResult:
        """Build the cost matrices of ``groups`` (one colour class) under ``perm`` and solve their LAPs."""
        ...

    def block_scores(self, outer: str, inners: Mapping[str | None, list[tuple[str, int]]],
                     perm: Mapping[str, torch.Tensor]) -> dict[str | None, np.ndarray]:
        """Per inner group, the (H, d, H, d) float64 block scores of head group ``outer`` (see ``block_start``)."""
        ...

    def objective(self, perm: Mapping[str, torch.Tensor]) -> float:
        """The part of sum over pairs of <target, perm(source)> that permutations change."""
        ...

    def constant(self) -> float:
        """The rest: inner products of tensors no permutation touches."""
        ...


def solve(spec: PermutationSpec, costs: Costs, options: SolveOptions,
          init: Mapping[str, torch.Tensor] | None = None) -> tuple[Permutation, dict]:
    """Block start, descent, block restart, descent again ... within ``options.max_sweeps`` sweeps in all.

    Args:
        spec: the permutation spec.
        costs: the cost matrices, block scores and objective of the pairs.
        options: when to stop, and the group order's seed.
        init: the start (identity by default), e.g. the previous step's permutation.

    Returns:
        ``(perm, info)``: perm on the CPU; info holds ``objective`` (the whole sum), ``sweeps``,
        ``laps``, ``converged`` (the last descent stopped by the rule, not by the cap, and no
        block restart was left untried), ``gains`` (per sweep), ``restarts`` (block restarts
        taken), ``cost_s`` and ``lap_s``.
    """
    if init is not None:
        spec.check_perm(init)
    device = costs.device
    perm = {g: p.clone().to(device) for g, p in (init or identity_permutation(spec)).items()}
    blocks = block_groups(spec)
    # The objective (a round trip to every worker on Ray) is needed to scale rtol and to judge
    # the moves of self-coupled groups; block starts compare objectives anyway.
    objective = costs.objective if options.rtol > 0 or self_coupled_groups(spec) else None
    total = {"sweeps": 0, "laps": 0, "cost_s": 0.0, "lap_s": 0.0, "gains": [], "restarts": 0}
    start = block_start(spec, perm, costs.block_scores, costs.objective) if blocks else None
    if start is not None:
        perm = start
    converged = False
    while True:
        budget = options.max_sweeps - total["sweeps"]
        perm, info = coordinate_descent(spec, costs.solve_class, init=perm, max_sweeps=budget, tol=options.tol,
                                        rtol=options.rtol, seed=options.seed, device=device, objective=objective)
        for key in ("sweeps", "laps", "cost_s", "lap_s", "gains"):
            total[key] += info[key]
        converged = info["converged"]
        if not blocks:
            break
        # Re-pick the blocks now that the other groups are aligned; descend again while it pays.
        restart = block_start(spec, {g: p.to(device) for g, p in perm.items()}, costs.block_scores, costs.objective)
        if restart is None:
            break
        total["restarts"] += 1
        perm = restart
        if total["sweeps"] >= options.max_sweeps:
            converged = False  # the restart raised the objective, but no sweep is left to descend from it
            break
    perm = {g: p.cpu() for g, p in perm.items()}
    movable = costs.objective(perm)
    return perm, {**total, "converged": converged, "objective": costs.constant() + movable}


def coordinate_descent(spec: PermutationSpec, solve_class: Callable[[list[str], Mapping[str, torch.Tensor]],
                                                                    ClassResult], *,
                       init: Mapping[str, torch.Tensor], max_sweeps: int, tol: float, rtol: float, seed: int,
                       device=None, objective: Callable[[Mapping[str, torch.Tensor]], float] | None = None,
                       ) -> tuple[Permutation, dict]:
    """One descent from ``init``: sweeps until one gains at most ``max(tol, rtol * |objective|)``.

    ``objective`` (the permuted part of the true objective) scales ``rtol`` and judges the moves
    of self-coupled groups, whose LAP value is not the objective's; without it rtol is measured
    against 0 and those moves are taken at their LAP value.
    """
    perm = {g: p.clone().to(device) for g, p in init.items()}
    rng = np.random.default_rng(seed)
    classes = color_groups(spec)
    neighbours = spec.conflicts()
    coupled = self_coupled_groups(spec) if objective is not None else set()
    # A group whose neighbours kept their permutations since its last solve has the same
    # cost matrix, and the LAP would return the same answer: skipping it changes nothing.
    stale = set(spec.sizes)
    t0 = time.perf_counter()
    value = objective(perm) if objective is not None else 0.0
    cost_s, lap_s = time.perf_counter() - t0, 0.0
    sweeps, converged, laps = 0, False, 0
    gains = []
    while sweeps < max_sweeps:
        sweeps += 1
        gain = 0.0  # the sweep's increase of the true objective
        for cls in sweep_order(classes, rng):
            todo = [g for g in cls if g in stale]
            if not todo:
                continue
            results, c_s, l_s = solve_class(todo, perm)
            cost_s += c_s
            lap_s += l_s
            laps += len(todo)
            t0 = time.perf_counter()
            for g, (p_new, value_new, value_old) in zip(todo, results):
                stale.discard(g)
                old = perm[g]
                # np.array copies: arrays from Ray's object store are read-only.
                p_new = torch.as_tensor(np.array(p_new), dtype=torch.long, device=old.device)
                if torch.equal(old, p_new):
                    continue
                perm[g] = p_new
                if g in coupled:
                    # The group sits on two axes of one tensor, so its cost matrix was taken at its
                    # own old permutation: the LAP's value is not the objective's. Keep the move only
                    # if the true objective rises, and solve the group again at its new permutation.
                    before = objective({**perm, g: old})
                    after = objective(perm)
                    if after < before:
                        perm[g] = old
                        continue
                    gain += after - before
                    stale.add(g)
                else:
                    # Linear in this group's permutation: the assignment's value change is exact.
                    gain += value_new - value_old
                stale |= neighbours[g]
            cost_s += time.perf_counter() - t0
        value += gain
        gains.append(gain)
        if gain <= max(tol, rtol * abs(value)):
            converged = True
            break
    perm = {g: p.cpu() for g, p in perm.items()}
    return perm, {"sweeps": sweeps, "laps": laps, "converged": converged, "cost_s": cost_s, "lap_s": lap_s,
                  "gains": gains}


def self_coupled_groups(spec: PermutationSpec) -> set[str]:
    """Groups on two axes of one tensor (h + relu(R h)): their cost depends on their own permutation."""
    out = set()
    for entry in spec.axes.values():
        named = [g for e in entry for g in axis_groups(e)]
        out |= {g for g in named if named.count(g) > 1}
    return out


def block_groups(spec: PermutationSpec) -> dict[str, dict[str | None, list[tuple[str, int]]]]:
    """outer group -> inner group (None: a plain block axis) -> [(tensor, its first plain axis)], in spec order."""
    pairs: dict[str, dict[str | None, list[tuple[str, int]]]] = {}
    for name, entry in spec.axes.items():
        at = 0
        for e in entry:
            if isinstance(e, tuple):  # each named part with the part after it: blocks and what is inside them
                for i, (outer, inner) in enumerate(zip(e[:-1], e[1:])):
                    if outer is not None:
                        pairs.setdefault(outer, {}).setdefault(inner, []).append((name, at + i))
            at += len(e) if isinstance(e, tuple) else 1
    return pairs


def block_start(spec: PermutationSpec, perm: dict[str, torch.Tensor],
                scores_of: Callable[[str, dict, dict], dict[str | None, np.ndarray]],
                objective: Callable[[Mapping[str, torch.Tensor]], float]) -> dict[str, torch.Tensor] | None:
    """A start for groups that move blocks of segmented axes (heads), or None if it does not beat ``perm``.

    Heads and the dims inside them sit on one axis, so each one's cost depends on the other's
    permutation, and descent from the identity can settle on the wrong heads. Here each (target
    block a, source block b) pair is scored by its best within-block matching, a d x d LAP, which
    needs no within-block permutation; the blocks are assigned by those scores, then each
    within-block group given the blocks. Plain axes of a block group (none in attention) are not
    scored. The start is returned only if it raises the objective over ``perm``.

    ``scores_of(outer, inners, start)`` gives the block scores summed over wherever the pairs
    live (one bank, or the shards of the Ray backend); the outer groups are assigned in spec
    order, each under the start as assigned so far.
    """
    start, moved = dict(perm), False
    for outer, inners in block_groups(spec).items():
        within = scores_of(outer, inners, start)
        if not within:
            continue
        moved = True
        device = start[outer].device
        score = np.zeros((spec.sizes[outer],) * 2)  # (H, H): target block a x source block b
        for inner, m in within.items():
            for a in range(score.shape[0]):
                for b in range(score.shape[1]):
                    block = m[a, :, b, :]  # (d, d)
                    rows = np.arange(len(block))
                    cols = linear_sum_assignment(block, maximize=True)[1] if inner is not None else rows
                    score[a, b] += block[rows, cols].sum()
        heads = linear_sum_assignment(score, maximize=True)[1]  # (H,): target block a takes source block heads[a]
        start[outer] = torch.as_tensor(heads, dtype=torch.long, device=device)
        for inner, m in within.items():
            if inner is not None:
                summed = sum(m[a, :, heads[a], :] for a in range(len(heads)))  # (d, d), over the assigned blocks
                start[inner] = torch.as_tensor(linear_sum_assignment(summed, maximize=True)[1], dtype=torch.long,
                                               device=device)
    if not moved:
        return None
    before = objective(perm)
    return start if objective(start) > before + 1e-9 * abs(before) else None


def assignment_gain(a, old: torch.Tensor, new) -> tuple[np.ndarray, float, float]:
    """(new assignment, its value, the value of ``old``) on cost matrix ``a`` (numpy, or a tensor on any device)."""
    if torch.is_tensor(a):
        a = a.double()
        new_t = torch.as_tensor(new if torch.is_tensor(new) else np.asarray(new), dtype=torch.long, device=a.device)
        # (n, n) gathered at (n, 1) column indices -> (n, 1): each row's assigned entry
        return (new_t.cpu().numpy(), float(a.gather(1, new_t[:, None]).sum()),
                float(a.gather(1, old.to(a.device)[:, None]).sum()))
    rows = np.arange(a.shape[0])
    new = np.asarray(new.cpu() if torch.is_tensor(new) else new)
    return new, float(a[rows, new].sum()), float(a[rows, old.cpu().numpy()].sum())  # (n, n) -> (n,) -> ()


def sum_terms(n: int, terms: Sequence[torch.Tensor], device=None, dtype=torch.float64) -> torch.Tensor:
    """The n x n cost matrix: its terms added in order, from zero (the order fixes the rounding).
    float64: sums over many pairs and many incremental updates accumulate without float32 loss."""
    a = torch.zeros((n, n), device=device, dtype=dtype)
    for c in terms:  # each (n, n)
        a += c.to(device) if device is not None else c
    return a
