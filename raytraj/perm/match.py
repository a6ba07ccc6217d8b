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

from .apply import Permutation, identity_permutation, permute_tensor
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
        self._static: dict[str, torch.Tensor] = {}
        # (tensor, axis) terms per group, split by whether other groups' permutations enter them.
        self._static_terms: dict[str, list[tuple[str, int]]] = {g: [] for g in spec.sizes}
        self._dynamic_terms: dict[str, list[tuple[str, int]]] = {g: [] for g in spec.sizes}
        for g, members in spec.groups.items():
            for name, axis in members:
                others = [a for i, a in enumerate(spec.axes[name]) if i != axis and a is not None]
                (self._dynamic_terms if others else self._static_terms)[g].append((name, axis))

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
            for g in self.spec.axes[name]:
                if g is None:
                    continue
                for term_name, axis in self._static_terms[g]:
                    if term_name == name:
                        term = _contract(t.unsqueeze(0), s.unsqueeze(0), axis + 1)
                        self._static[g] = self._static[g] + term if g in self._static else term
        self.num_pairs += 1

    # -- solving ------------------------------------------------------------------------------
    def cost(self, group: str, perm: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A_group under the current permutations of the other groups."""
        n = self.spec.sizes[group]
        a = self._static.get(group)
        a = a.clone() if a is not None else torch.zeros((n, n), device=self.device, dtype=self.dtype)
        for name, axis in self._dynamic_terms[group]:
            if name not in self.targets:
                continue
            src = permute_tensor(self.sources[name].view(), (None, *self.spec.axes[name]), perm, skip_axis=axis + 1)
            a += _contract(self.targets[name].view(), src, axis + 1)
        return a

    def objective(self, perm: Mapping[str, torch.Tensor]) -> float:
        """sum over pairs of <target, perm(source)>."""
        total = 0.0
        for name, targets in self.targets.items():
            src = permute_tensor(self.sources[name].view(), (None, *self.spec.axes[name]), perm)
            total += float((targets.view() * src).sum())
        return total

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
        if init is not None:
            self.spec.check_perm(init)
        perm = {g: p.clone().to(self.device) for g, p in (init or identity_permutation(self.spec)).items()}
        rng = np.random.default_rng(seed)
        classes = color_groups(self.spec)
        cost_s = lap_s = 0.0
        sweeps, converged = 0, False
        while sweeps < max_sweeps:
            sweeps += 1
            progress = False
            for cls in sweep_order(classes, rng):
                t0 = time.perf_counter()
                costs = [self.cost(g, perm).double().cpu().numpy() for g in cls]
                t1 = time.perf_counter()
                new = solve_laps(costs)
                lap_s += time.perf_counter() - t1
                cost_s += t1 - t0
                for g, a, p_new in zip(cls, costs, new):
                    rows = np.arange(a.shape[0])
                    old_value = a[rows, perm[g].cpu().numpy()].sum()
                    new_value = a[rows, p_new].sum()
                    if new_value > old_value + tol:
                        progress = True
                    perm[g] = torch.as_tensor(np.asarray(p_new), dtype=torch.long, device=self.device)
            if not progress:
                converged = True
                break
        perm = {g: p.cpu() for g, p in perm.items()}
        info = {
            "objective": self.objective(perm),
            "sweeps": sweeps,
            "converged": converged,
            "cost_s": cost_s,
            "lap_s": lap_s,
            "pairs": self.num_pairs,
        }
        return perm, info


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
