"""Git Re-Basin coordinate descent: the permutation that best aligns sources with targets.

``match`` maximises  sum over pairs of <target, perm(source)>  over all permutations the spec
allows, one group at a time. For group g with the others fixed this is a linear assignment
problem on the n x n matrix

    A_g = sum over pairs, over (tensor, axis) in g of  target_axis @ perm_except_axis(source)_axis^T

Weight matching (Oracle) passes weight displacements; gradient matching (GMT/FGMT) passes
gradients. ``PairBank`` holds the pairs stacked along a new leading dimension, so each term is
one matmul over all pairs, and it caches the terms that no other group's permutation changes
(a tensor's only grouped axis: first layers, biases, BatchNorm), paying for them once per pair.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .apply import Permutation, identity_permutation
from .coloring import color_groups, sweep_order
from .spec import PermutationSpec, SpecError

LapSolver = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def solve_laps_serial(costs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Maximum-weight assignment of each square matrix; row i goes to column result[i]."""
    return [linear_sum_assignment(a, maximize=True)[1] for a in costs]


class _Stack:
    """A growable stack of same-shaped tensors (capacity doubles, so appends are amortised O(1))."""

    def __init__(self, shape, device, dtype):
        self.data = torch.empty((4, *shape), device=device, dtype=dtype)
        self.n = 0

    def append(self, t: torch.Tensor):
        if self.n == self.data.shape[0]:
            grown = torch.empty((2 * self.n, *self.data.shape[1:]), device=self.data.device, dtype=self.data.dtype)
            grown[: self.n] = self.data
            self.data = grown
        self.data[self.n] = t
        self.n += 1

    def view(self) -> torch.Tensor:
        return self.data[: self.n]


class _DynamicTerm:
    """One (tensor, axis) of a group whose contraction depends on other groups' permutations.

    The contraction over all stored pairs is cached together with the permutations it was
    taken at. When those change in a few units, only the changed slices are recomputed; a new
    pair adds only its own contribution. Warm-started solves change few units per step, so
    this keeps a solve's cost near one pair's worth instead of all pairs'.
    """

    def __init__(self, spec: PermutationSpec, name: str, axis: int):
        self.name, self.axis = name, axis
        self.stacked_axes = (None, *spec.axes[name])  # dim 0 stacks the pairs
        self.others = [(i + 1, g) for i, g in enumerate(spec.axes[name]) if i != axis and g is not None]
        self.value: torch.Tensor | None = None
        self.at: dict[int, torch.Tensor] = {}

    def _permuted_source(self, source: torch.Tensor, at: Mapping[int, torch.Tensor]) -> torch.Tensor:
        for dim, _ in self.others:
            source = source.index_select(dim, at[dim])
        return source

    def add_pair(self, target: torch.Tensor, source: torch.Tensor) -> None:
        if self.value is not None:
            self.value += _contract(target, self._permuted_source(source, self.at), self.axis + 1)

    def refresh(self, targets: torch.Tensor, sources: torch.Tensor, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
        want = {dim: perm[g] for dim, g in self.others}
        if self.value is None:
            self.at = {dim: p.clone() for dim, p in want.items()}
            self.value = _contract(targets, self._permuted_source(sources, self.at), self.axis + 1)
            return self.value
        for dim, p in want.items():
            changed = (self.at[dim] != p).nonzero().flatten()
            if len(changed) == 0:
                continue
            if 2 * len(changed) > len(p):  # most units moved: a full recompute is cheaper
                self.at = {d: q.clone() for d, q in want.items()}
                self.value = _contract(targets, self._permuted_source(sources, self.at), self.axis + 1)
                return self.value
            diff = sources.index_select(dim, p[changed]) - sources.index_select(dim, self.at[dim][changed])
            for other, _ in self.others:
                if other != dim:
                    diff = diff.index_select(other, self.at[other])
            self.value += _contract(targets.index_select(dim, changed), diff, self.axis + 1)
            self.at[dim] = p.clone()
        return self.value


class PairBank:
    """(target, source) tensor pairs for one spec, ready for repeated solves.

    FGMT keeps one bank and adds a pair per step; GMT builds a new bank per step.
    """

    def __init__(self, spec: PermutationSpec, *, normalize: bool = False, device=None, dtype=torch.float32):
        self.spec = spec
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.targets: dict[str, _Stack] = {}
        self.sources: dict[str, _Stack] = {}
        self.num_pairs = 0
        # A tensor's only grouped axis contracts to the same matrix whatever the other groups'
        # permutations (first layers, biases, BatchNorm): summed once per pair.
        self._static: dict[tuple[str, int], torch.Tensor] = {}
        self._static_terms: dict[str, list[tuple[str, int]]] = {g: [] for g in spec.sizes}
        self._dynamic: dict[str, list[_DynamicTerm]] = {g: [] for g in spec.sizes}
        self._constant = 0.0  # <target, source> of tensors no permutation touches
        for g, members in spec.groups.items():
            for name, axis in members:
                if any(a is not None for i, a in enumerate(spec.axes[name]) if i != axis):
                    self._dynamic[g].append(_DynamicTerm(spec, name, axis))
                else:
                    self._static_terms[g].append((name, axis))
        # One term per permuted tensor is enough to read off its share of the objective.
        self._objective_terms: dict[str, tuple[str, object]] = {}
        for g in spec.sizes:
            for name, axis in self._static_terms[g]:
                self._objective_terms.setdefault(name, (g, (name, axis)))
            for term in self._dynamic[g]:
                self._objective_terms.setdefault(term.name, (g, term))

    def __len__(self) -> int:
        return self.num_pairs

    def add(self, target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]) -> None:
        """Add one pair; it may hold any subset of the spec's tensors, the same in both dicts."""
        if set(target) != set(source):
            raise SpecError(
                f"pair holds different tensors on its two sides: only in target {sorted(set(target) - set(source))}, "
                f"only in source {sorted(set(source) - set(target))}"
            )
        if not target:
            raise SpecError("pair holds no tensors")
        self.spec.check_tensors(target, what="target of a matching pair")
        self.spec.check_tensors(source, what="source of a matching pair")
        if self.device is None:
            self.device = next(iter(target.values())).device
        for side, tensors in (("target", target), ("source", source)):
            for name, t in tensors.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise FloatingPointError(
                        f"{side} tensor {name} holds NaN or inf values; a gradient blew up or a checkpoint is "
                        "damaged. Lower the learning rate of the source run or check the trajectory store."
                    )
        for name in target:
            t = target[name].to(self.device, self.dtype)
            s = source[name].to(self.device, self.dtype)
            if self.normalize:
                norm = float(t.norm() * s.norm())
                if norm > 1e-12:
                    t = t / norm
            if name not in self.targets:
                self.targets[name] = _Stack(t.shape, self.device, self.dtype)
                self.sources[name] = _Stack(s.shape, self.device, self.dtype)
            self.targets[name].append(t)
            self.sources[name].append(s)
        for name in target:
            if name not in self._objective_terms:
                self._constant += float((self.targets[name].view()[-1] * self.sources[name].view()[-1]).sum())
        for g in self.spec.sizes:
            for name, axis in self._static_terms[g]:
                if name in target:
                    term = _contract(self.targets[name].view()[-1:], self.sources[name].view()[-1:], axis + 1)
                    key = (name, axis)
                    self._static[key] = self._static[key] + term if key in self._static else term
            for term in self._dynamic[g]:
                if term.name in target:
                    term.add_pair(self.targets[term.name].view()[-1:], self.sources[term.name].view()[-1:])
        self.num_pairs += 1

    # -- solving ------------------------------------------------------------------------------
    def cost_terms(self, group: str, perm: Mapping[str, torch.Tensor]) -> list[tuple[int, torch.Tensor]]:
        """The terms of A_group this bank holds, as (index in the group's term order, n x n matrix);
        the order is the spec's: static terms, then dynamic ones.

        A bank holding a subset of the tensors (a worker's shard) returns its own terms; summing
        every shard's terms in index order gives, bit for bit, what one bank holding all gives.
        """
        out = []
        for i, key in enumerate(self._static_terms[group]):
            if key in self._static:
                out.append((i, self._static[key]))
        offset = len(self._static_terms[group])
        for i, term in enumerate(self._dynamic[group]):
            if term.name in self.targets:
                out.append((offset + i, term.refresh(self.targets[term.name].view(), self.sources[term.name].view(),
                                                     perm)))
        return out

    def cost(self, group: str, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A_group under the current permutations of the other groups."""
        return sum_terms(self.spec.sizes[group], [c for _, c in self.cost_terms(group, perm)], self.device,
                         self.dtype)

    def objective(self, perm: Mapping[str, torch.Tensor]) -> float:
        """sum over pairs of <target, perm(source)>, read off the cached contractions."""
        total = self._constant
        for name, (group, term) in self._objective_terms.items():
            if name not in self.targets:
                continue
            if isinstance(term, _DynamicTerm):
                c = term.refresh(self.targets[name].view(), self.sources[name].view(), perm)
            else:
                c = self._static[term]
            rows = torch.arange(c.shape[0], device=c.device)
            total += float(c[rows, perm[group].to(c.device)].double().sum())
        return total

    def cache_state(self) -> dict[str, torch.Tensor]:
        """The cached contractions, so that a resumed run continues bit for bit."""
        out = {}
        for g, terms in self._dynamic.items():
            for term in terms:
                if term.value is not None:
                    key = f"{term.name}:{term.axis}"
                    out[f"value/{key}"] = term.value
                    out.update({f"at/{key}/{dim}": p for dim, p in term.at.items()})
        return out

    def load_cache_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for terms in self._dynamic.values():
            for term in terms:
                key = f"{term.name}:{term.axis}"
                if f"value/{key}" in tensors:
                    term.value = tensors[f"value/{key}"].to(self.device, self.dtype).clone()
                    term.at = {dim: tensors[f"at/{key}/{dim}"].to(self.device) for dim, _ in term.others}

    def solve(
        self,
        *,
        init: Mapping[str, torch.Tensor] | None = None,
        max_sweeps: int = 100,
        tol: float = 1e-7,
        seed: int = 0,
        solve_laps: LapSolver = solve_laps_serial,
    ) -> tuple[Permutation, dict]:
        """Coordinate descent from ``init`` (identity by default); see :func:`match`."""
        if self.num_pairs == 0:
            raise SpecError("no pairs to match; add at least one (target, source) pair")

        def solve_class(todo, perm):
            t0 = time.perf_counter()
            costs = [self.cost(g, perm).double().cpu().numpy() for g in todo]
            t1 = time.perf_counter()
            new = solve_laps(costs)
            lap_s = time.perf_counter() - t1
            return [assignment_gain(a, perm[g], p) for a, g, p in zip(costs, todo, new)], t1 - t0, lap_s

        perm, info = coordinate_descent(self.spec, solve_class, init=init, max_sweeps=max_sweeps, tol=tol,
                                        seed=seed, device=self.device)
        info["objective"] = self.objective(perm)
        info["pairs"] = self.num_pairs
        return perm, info


# A colour class's solver: (groups to solve, current perm) -> per group (new assignment, its value,
# the current assignment's value), and the seconds spent building costs and solving LAPs. The
# local one builds costs from a PairBank; the Ray backend's builds them on the workers.
ClassSolver = Callable[[list[str], Mapping[str, torch.Tensor]], tuple[list[tuple[np.ndarray, float, float]], float,
                                                                       float]]


def assignment_gain(a: np.ndarray, old: torch.Tensor, new: np.ndarray) -> tuple[np.ndarray, float, float]:
    rows = np.arange(a.shape[0])
    return np.asarray(new), float(a[rows, new].sum()), float(a[rows, old.cpu().numpy()].sum())


def sum_terms(n: int, terms: Sequence[torch.Tensor], device=None, dtype=torch.float32) -> torch.Tensor:
    """The n x n cost matrix: its terms added in order, from zero (the order fixes the rounding)."""
    a = torch.zeros((n, n), device=device, dtype=dtype)
    for c in terms:
        a += c
    return a


def coordinate_descent(spec: PermutationSpec, solve_class: ClassSolver, *,
                       init: Mapping[str, torch.Tensor] | None = None, max_sweeps: int = 100, tol: float = 1e-7,
                       seed: int = 0, device=None) -> tuple[Permutation, dict]:
    """The sweep loop of :meth:`PairBank.solve`, wherever the cost matrices live."""
    if init is not None:
        spec.check_perm(init)
    perm = {g: p.clone().to(device) for g, p in (init or identity_permutation(spec)).items()}
    rng = np.random.default_rng(seed)
    classes = color_groups(spec)
    neighbours = spec.conflicts()
    # A group whose neighbours kept their permutations since its last solve has the same
    # cost matrix, and the LAP would return the same answer: skipping it changes nothing.
    stale = set(spec.sizes)
    cost_s = lap_s = 0.0
    sweeps, converged, laps = 0, False, 0
    while sweeps < max_sweeps:
        sweeps += 1
        progress = False
        for cls in sweep_order(classes, rng):
            todo = [g for g in cls if g in stale]
            if not todo:
                continue
            results, c_s, l_s = solve_class(todo, perm)
            cost_s += c_s
            lap_s += l_s
            laps += len(todo)
            for g, (p_new, value_new, value_old) in zip(todo, results):
                stale.discard(g)
                old = perm[g].cpu().numpy()
                if value_new > value_old + tol:
                    progress = True
                if not np.array_equal(old, p_new):
                    stale |= neighbours[g]
                perm[g] = torch.tensor(np.asarray(p_new), dtype=torch.long, device=device)
        if not progress:
            converged = True
            break
    perm = {g: p.cpu() for g, p in perm.items()}
    return perm, {"sweeps": sweeps, "laps": laps, "converged": converged, "cost_s": cost_s, "lap_s": lap_s}


def _contract(target: torch.Tensor, source: torch.Tensor, axis: int) -> torch.Tensor:
    """sum over every dim except ``axis``: an (n, n) matrix target_axis @ source_axis^T."""
    others = [d for d in range(target.dim()) if d != axis]
    return torch.tensordot(target, source, dims=(others, others))


def match(
    spec: PermutationSpec,
    pairs: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]],
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    normalize: bool = False,
    max_sweeps: int = 100,
    tol: float = 1e-7,
    seed: int = 0,
    solve_laps: LapSolver = solve_laps_serial,
) -> tuple[Permutation, dict]:
    """The permutation maximising sum over pairs of <target, perm(source)>.

    ``pairs`` is a list of (target, source) dicts of tensors: weights, displacements or
    gradients, any subset of the spec's tensors. Each sweep visits the groups in a seeded random
    order (by colour class, see :mod:`raytraj.perm.coloring`) and solves one LAP per group; it
    stops after a sweep in which no group's assignment value improved by more than ``tol``.
    ``init`` warm-starts. ``normalize`` divides each pair's term for a tensor by the norms of
    its two sides. Returns ``(perm, info)``; ``info`` holds the objective, the sweep count, and
    the seconds spent building costs and solving LAPs.
    """
    bank = PairBank(spec, normalize=normalize)
    for target, source in pairs:
        bank.add(target, source)
    return bank.solve(init=init, max_sweeps=max_sweeps, tol=tol, seed=seed, solve_laps=solve_laps)
