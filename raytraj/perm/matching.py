"""Git Re-Basin coordinate descent: the permutation that best aligns sources with targets.

``match`` maximises  sum over pairs of <target, perm(source)>  over all permutations the spec
allows, one group at a time. For group g with the others fixed this is a linear assignment
problem on the n x n matrix

    A_g = sum over pairs, over (tensor, axis) in g of  target_axis @ perm_except_axis(source)_axis^T

Weight matching (Oracle) passes weight displacements; gradient matching (GMT/FGMT) passes
gradients. ``PairBank`` holds the pairs stacked along a new leading dimension, so each term is
one matmul over all pairs, and it caches the terms that no other group's permutation changes
(a tensor's only grouped axis: first layers, biases, BatchNorm), paying for them once per pair.

Segmented axes (attention heads x head dims) are stored split in two, so the terms above see plain
axes. The solve flow itself (block start, descent, block restart) is ``perm.descent.solve``'s; a bank
supplies it with cost matrices, block scores and the objective through ``BankCosts``.
"""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np
import torch

from ..finite import is_finite, nonfinite_names
from .apply import Permutation
from .lap import LapSolver, solve_laps_serial
from .descent import ClassResult, SolveOptions, assignment_gain, solve, sum_terms
from .spec import PermutationSpec, SpecError


class _Stack:
    """A growable stack of same-shaped tensors (capacity doubles, so appends are amortised O(1))."""

    def __init__(self, shape, device, dtype):
        self.data = torch.empty((4, *shape), device=device, dtype=dtype)  # (capacity, *shape)
        self.n = 0

    def append(self, t: torch.Tensor):
        if self.n == self.data.shape[0]:
            grown = torch.empty((2 * self.n, *self.data.shape[1:]), device=self.data.device, dtype=self.data.dtype)
            grown[: self.n] = self.data
            self.data = grown
        self.data[self.n] = t
        self.n += 1

    def view(self) -> torch.Tensor:
        return self.data[: self.n]  # (n, *shape)


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
        self.value: torch.Tensor | None = None  # (n, n), n the size of the group on ``axis``
        self.at: dict[int, torch.Tensor] = {}  # stacked dim -> (size of its group,) perm the value was taken at

    def _permuted_source(self, source: torch.Tensor, at: Mapping[int, torch.Tensor]) -> torch.Tensor:
        for dim, _ in self.others:
            source = source.index_select(dim, at[dim])  # (P, *dims), same shape: dim reordered
        return source

    def add_pair(self, target: torch.Tensor, source: torch.Tensor) -> None:
        if self.value is not None:
            # (1, *dims) x (1, *dims) -> (n, n)
            self.value += _contract(target, self._permuted_source(source, self.at), self.axis + 1)

    def refresh(self, targets: torch.Tensor, sources: torch.Tensor, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
        want = {dim: perm[g] for dim, g in self.others}
        if self.value is None:
            self.at = {dim: p.clone() for dim, p in want.items()}
            # (P, *dims) x (P, *dims) -> (n, n)
            self.value = _contract(targets, self._permuted_source(sources, self.at), self.axis + 1)
            return self.value
        for dim, p in want.items():
            changed = (self.at[dim] != p).nonzero().flatten()  # (c,) units of dim whose source unit moved
            if len(changed) == 0:
                continue
            if 2 * len(changed) > len(p):  # most units moved: a full recompute is cheaper
                self.at = {d: q.clone() for d, q in want.items()}
                self.value = _contract(targets, self._permuted_source(sources, self.at), self.axis + 1)
                return self.value
            # (P, *dims) with c in place of dim: the new source slices minus the ones the value holds
            diff = sources.index_select(dim, p[changed]) - sources.index_select(dim, self.at[dim][changed])
            for other, _ in self.others:
                if other != dim:
                    diff = diff.index_select(other, self.at[other])
            self.value += _contract(targets.index_select(dim, changed), diff, self.axis + 1)  # (n, n)
            self.at[dim] = p.clone()
        return self.value


class PairBank:
    """(target, source) tensor pairs for one spec, ready for repeated solves.

    FGMT keeps one bank and adds a pair per step; GMT builds a new bank per step.

    Args:
        spec: the permutation spec.
        normalize: divide each pair's term for a tensor by the norms of its two sides.
        device: where the pairs and their contractions live (default: the first pair's device).
        dtype: the pairs' dtype (contractions accumulate in float64 whatever it is).
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
        # Segmented axes are stored split in two, (n_outer, n_inner), so every term below sees
        # plain axes: a head's cost is then the sum over its block, under the within-head perm.
        self._plain = plain = spec.unsegmented()
        for g, members in plain.groups.items():
            for name, axis in members:
                if any(a is not None for i, a in enumerate(plain.axes[name]) if i != axis):
                    self._dynamic[g].append(_DynamicTerm(plain, name, axis))
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
            bad = nonfinite_names(tensors)
            if bad:
                # Transfers check their gradients first (transfer/worker.py names the point and the side);
                # this guards every other caller, e.g. weight matching.
                raise FloatingPointError(
                    f"the {side} side of a matching pair holds NaN or inf values in {bad[0]}; check what was "
                    "passed to the matching (a gradient that overflowed, or damaged weights)"
                )
        for name in target:
            t = target[name].to(self.device, self.dtype).reshape(self._plain.shapes[name])  # (*dims), segments split
            s = source[name].to(self.device, self.dtype).reshape(self._plain.shapes[name])  # (*dims)
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
                # (*dims) * (*dims) -> ()
                self._constant += float((self.targets[name].view()[-1] * self.sources[name].view()[-1]).sum())
        for g in self.spec.sizes:
            for name, axis in self._static_terms[g]:
                if name in target:
                    # the new pair only: (1, *dims) -> (n, n)
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
        return sum_terms(self.spec.sizes[group], [c for _, c in self.cost_terms(group, perm)], self.device)

    def objective(self, perm: Mapping[str, torch.Tensor]) -> float:
        """sum over pairs of <target, perm(source)>, read off the cached contractions."""
        return self.constant + self.permuted_objective(perm)

    @property
    def constant(self) -> float:
        """The part of the objective no permutation changes: <target, source> of unpermuted tensors."""
        return self._constant

    def permuted_objective(self, perm: Mapping[str, torch.Tensor]) -> float:
        """The part of the objective that permutations change (what a solve's rtol is measured against)."""
        total = 0.0
        for name, (group, term) in self._objective_terms.items():
            if name not in self.targets:
                continue
            if isinstance(term, _DynamicTerm):
                c = term.refresh(self.targets[name].view(), self.sources[name].view(), perm)
            else:
                c = self._static[term]
            rows = torch.arange(c.shape[0], device=c.device)
            total += float(c[rows, perm[group].to(c.device)].double().sum())  # (n, n) -> (n,) assigned entries -> ()
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
                    term.value = tensors[f"value/{key}"].to(self.device, torch.float64).clone()
                    term.at = {dim: tensors[f"at/{key}/{dim}"].to(self.device) for dim, _ in term.others}

    def solve(self, *, init: Mapping[str, torch.Tensor] | None = None, options: SolveOptions = SolveOptions(),
              solve_laps: LapSolver = solve_laps_serial) -> tuple[Permutation, dict]:
        """Coordinate descent from ``init`` (identity by default); see :func:`match`.

        Args:
            init: the start, e.g. the previous step's permutation.
            options: when to stop (a total sweep budget) and the group order's seed.
            solve_laps: solves a colour class's LAPs (one marked ``on_device`` takes tensors where they are).

        Returns:
            ``(perm, info)`` as :func:`raytraj.perm.descent.solve` gives, plus ``pairs``.
        """
        if self.num_pairs == 0:
            raise SpecError("no pairs to match; add at least one (target, source) pair")
        perm, info = solve(self.spec, BankCosts(self, solve_laps), options, init=init)
        return perm, {**info, "pairs": self.num_pairs}


class BankCosts:
    """A ``PairBank`` as the ``Costs`` of a solve: its cost matrices solved by ``solve_laps``."""

    def __init__(self, bank: PairBank, solve_laps: LapSolver = solve_laps_serial):
        self.bank, self.solve_laps = bank, solve_laps
        self.device = bank.device
        # A device solver takes the cost matrices where they are; scipy takes float64 numpy.
        self._on_device = bool(getattr(solve_laps, "on_device", False))

    def solve_class(self, todo: list[str], perm: Mapping[str, torch.Tensor]) -> ClassResult:
        t0 = time.perf_counter()
        mats = [self.bank.cost(g, perm) for g in todo]
        for g, a in zip(todo, mats):
            if not is_finite(a):
                raise FloatingPointError(
                    f"the cost matrix of permutation group {g} holds NaN or inf: products of the matched "
                    "tensors overflow, so their values are too large. Check the source's weights and the "
                    "training data for extreme values, or record the source with a lower --lr")
        costs = mats if self._on_device else [a.double().cpu().numpy() for a in mats]
        t1 = time.perf_counter()
        new = self.solve_laps(costs)
        lap_s = time.perf_counter() - t1
        return [assignment_gain(a, perm[g], p) for a, g, p in zip(costs, todo, new)], t1 - t0, lap_s

    def block_scores(self, outer, inners, perm):
        return block_scores(self.bank, perm, inners)

    def objective(self, perm) -> float:
        return self.bank.permuted_objective(perm)

    def constant(self) -> float:
        return self.bank.constant


def block_scores(bank: PairBank, perm: Mapping[str, torch.Tensor],
                 inners: Mapping[str | None, list[tuple[str, int]]]) -> dict[str | None, np.ndarray]:
    """This bank's share of one outer group's block scores: per inner group, the (H, d, H, d) float64
    sum over the tensors it holds of target block a dim j against source block b dim k, the source's
    other axes under ``perm``. A bank holding a subset of the tensors (a worker's shard) gives its part."""
    plain = bank._plain
    out = {}
    for inner, members in inners.items():
        m = None
        for name, at in members:
            if name not in bank.targets:
                continue
            t, s = bank.targets[name].view(), bank.sources[name].view()  # (P, *dims), dims at+1, at+2 = (H, d)
            for axis, g in enumerate(plain.axes[name]):
                if g is not None and axis not in (at, at + 1):
                    s = s.index_select(axis + 1, perm[g].to(s.device))  # same shape, axis reordered
            c = contract_axes(t, s, (at + 1, at + 2))  # (H, d, H, d) float64: target a, j x source b, k
            m = c if m is None else m + c
        if m is not None:
            out[inner] = m.cpu().numpy()
    return out


# On the CPU, the summed dimension of a contraction is cut into chunks of this many entries. MKL
# splits a long one over its threads (from about 1024 entries on 2 threads), so the float32 result
# would follow the thread count: a Ray worker with one CPU and this process with eight would feed
# the LAPs different last bits, and tied units would be assigned differently. Chunks this short
# are summed alike by one thread or many; their products are added in float64, in chunk order.
CONTRACT_CHUNK = 512


def contract_axes(target: torch.Tensor, source: torch.Tensor, keep: tuple[int, ...]) -> torch.Tensor:
    """sum over every dim except ``keep`` of target x source, in float64, the same whatever the thread count.

    (P, *dims) x (P, *dims) -> (*target's kept dims, *source's kept dims)
    """
    others = [d for d in range(target.dim()) if d not in keep]
    kept = [target.shape[d] for d in keep]
    summed = math.prod(target.shape[d] for d in others)
    if target.device.type != "cpu" or summed <= CONTRACT_CHUNK:
        # Sums over many pairs and many incremental updates accumulate in float64, on any device.
        return torch.tensordot(target, source, dims=(others, others)).double()
    n = math.prod(kept)
    t = target.permute(*keep, *others).reshape(n, summed)  # (n, K)
    s = source.permute(*keep, *others).reshape(n, summed)  # (n, K)
    out = torch.zeros((n, n), dtype=torch.float64)
    for k in range(0, summed, CONTRACT_CHUNK):
        out += (t[:, k:k + CONTRACT_CHUNK] @ s[:, k:k + CONTRACT_CHUNK].T).double()  # (n, chunk) x (chunk, n)
    return out.reshape(*kept, *kept)


def _contract(target: torch.Tensor, source: torch.Tensor, axis: int) -> torch.Tensor:
    """sum over every dim except ``axis``: an (n, n) float64 matrix target_axis @ source_axis^T."""
    return contract_axes(target, source, (axis,))  # (P, *dims) x (P, *dims) -> (n, n)


def match(
    spec: PermutationSpec,
    pairs: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]],
    *,
    init: Mapping[str, torch.Tensor] | None = None,
    normalize: bool = False,
    max_sweeps: int = 100,
    tol: float = 1e-7,
    rtol: float = 0.0,
    seed: int = 0,
    solve_laps: LapSolver = solve_laps_serial,
) -> tuple[Permutation, dict]:
    """The permutation maximising sum over pairs of <target, perm(source)> (Git Re-Basin matching).

    Each sweep visits the groups in a seeded random order (by colour class, see
    :mod:`raytraj.perm.coloring`) and solves one LAP per group; a group on two axes of one
    tensor is solved again after it moves, and its move is kept only if the true objective
    rises. Segmented axes (attention heads) get block starts (see :func:`raytraj.perm.solve`).
    The shorthand of ``PairBank(spec).add(...)`` then ``solve(options=SolveOptions(...))``.

    Args:
        spec: the permutation spec.
        pairs: (target, source) dicts of tensors: weights, displacements or gradients, any subset
            of the spec's tensors, the same in both dicts of a pair.
        init: warm start (default identity).
        normalize: divide each pair's term for a tensor by the norms of its two sides.
        max_sweeps: sweeps allowed in all (block restarts included).
        tol: stop after a sweep whose gain in the objective is at most ``tol`` (the official code
            stops after a sweep in which no single group's LAP gained more than 1e-7) ...
        rtol: ... or at most ``rtol`` x |the permuted part of the objective|.
        seed: seeds the group order.
        solve_laps: solves a colour class's assignment problems (scipy by default; one marked
            ``on_device`` receives the cost tensors where they live).

    Returns:
        ``(perm, info)``: group -> permutation (on the CPU), and ``info`` with the ``objective``,
        ``sweeps``, ``laps``, ``converged`` (stopped by the rule before ``max_sweeps``), ``gains``
        (per sweep), ``restarts``, ``pairs``, and the seconds spent building costs and solving LAPs.
    """
    bank = PairBank(spec, normalize=normalize)
    for target, source in pairs:
        bank.add(target, source)
    return bank.solve(init=init, options=SolveOptions(max_sweeps=max_sweeps, tol=tol, rtol=rtol, seed=seed),
                      solve_laps=solve_laps)
