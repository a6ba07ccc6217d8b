"""Linear assignment problems (LAPs): scipy on the CPU, a sparse one for wide groups, and a batched
torch auction for devices.

Coordinate descent solves one maximum-weight assignment per permutation group. scipy's
``linear_sum_assignment`` is the fastest exact CPU solver we measured, but it is cubic: a 2048-wide
group costs seconds per solve. :func:`solve_laps_sparse` solves the assignment restricted to each
row's and each column's ``k`` best entries at approximate (Sinkhorn) prices, plus the group's
current assignment: the current assignment keeps the restricted problem feasible and its answer
never worse than the current one, so coordinate descent still rises monotonically. The restricted
problem is solved by OR-tools' cost-scaling assignment where it is installed (the ``fastlap``
extra), else by scipy's sparse Jonker-Volgenant (``min_weight_full_bipartite_matching``), which
measured slower than the dense exact solve. ``--lap sparse`` takes it for groups of ``SPARSE_FROM``
units or more; ``auto`` stays exact on the CPU whatever is installed. On a GPU, :func:`solve_laps_auction` solves all same-sized
matrices of a colour class as one batch where they live: a Jacobi auction (Bertsekas) with
epsilon-scaling.

The auction ends with an assignment and prices p; u_i = max_j (a_ij - p_j) makes (u, p) a
feasible dual, so  sum(u) + sum(p) - value(assignment)  bounds how far the assignment is from the
optimum. The last phase's epsilon makes that bound n * eps = ``tie_rtol`` x the matrix's value
range: assignments closer than that are ties at the precision the cost matrices carry (float32
contractions). A matrix whose bound is not met, or whose auction runs too long, is solved by
scipy instead, so the answer is always optimal up to ties.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

# (cost matrices[, current=assignments]) -> assignments. A solver marked ``takes_current`` is
# passed the groups' current assignments; one marked ``on_device`` gets torch tensors where they live.
LapSolver = Callable[..., list]

# Candidates per row and per column of the sparse solver, and the temperatures (relative to the
# costs' spread) and scaling iterations of its Sinkhorn prices (see sparse_assignment). Measured on
# recorded gradient-matching costs of MNIST-1D MLPs in benchmarks/results/cost.md.
SPARSE_K = 16
SPARSE_TEMPS = (1.0, 0.14, 0.02)
SPARSE_INNER = 6
# ``auto`` on the CPU solves groups at least this wide with the sparse solver, narrower ones exactly,
# where OR-tools is installed: scipy's sparse LAPJVsp was slower than its dense exact solve on the
# same candidate graphs, OR-tools' assignment 40x faster than LAPJVsp (benchmarks/results/cost.md).
SPARSE_FROM = 1024


def _check_finite(costs) -> None:
    if not all(np.isfinite(a).all() for a in costs):  # scipy's own error names no cause
        raise FloatingPointError("a LAP cost matrix holds NaN or inf values")


def solve_laps_serial(costs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Maximum-weight assignment of each square matrix; row i goes to column result[i]."""
    _check_finite(costs)
    return [linear_sum_assignment(a, maximize=True)[1] for a in costs]


def sparse_assignment(a: np.ndarray, k: int = SPARSE_K, current: np.ndarray | None = None, *,
                      engine: str | None = None) -> np.ndarray:
    """The maximum-weight assignment of ``a`` among a few candidate entries per row and column.

    Plain top-k candidates fail on gradient-matching costs: they are nearly low-rank, so every
    row's largest entries sit in the same few "hub" columns, and the best assignment inside them
    was 15-50% short of the optimum (of the way from a random assignment to it). So candidates
    are ranked by reduced cost instead, a_ij - v_j per row and a_ij - u_i per column, with prices
    (u, v) from Sinkhorn scaling at falling temperature: approximate duals of the assignment LP,
    under which the optimum's entries rank first.

    Args:
        a: (n, n) float cost matrix.
        k: candidates per row and per column.
        current: (n,) an assignment kept among the candidates (row i -> column current[i]; the
            identity when None): the candidate graph always has a perfect matching, and the answer
            is never worse than it (checked in float64: it is returned itself otherwise).
        engine: the sparse solver, ``ortools`` or ``scipy`` (None: OR-tools where installed).

    Returns:
        (n,) column of each row.
    """
    n = a.shape[0]
    if n <= 2 * k:
        return linear_sum_assignment(a, maximize=True)[1]
    r, c = sparse_candidates(a, k, current)
    cols = _sparse_lap(n, r, c, a[r, c], engine)
    cur = np.arange(n) if current is None else np.asarray(current)
    rows = np.arange(n)
    # The candidates' optimum is at least the current assignment's value in exact arithmetic; the
    # integer costs of OR-tools round. Coordinate descent must never step down, so check.
    return cols if a[rows, cols].sum() >= a[rows, cur].sum() else cur


def sparse_candidates(a: np.ndarray, k: int = SPARSE_K, current: np.ndarray | None = None,
                      temps: Sequence[float] = SPARSE_TEMPS, inner: int = SPARSE_INNER) -> tuple[np.ndarray, np.ndarray]:
    """The candidate edges of :func:`sparse_assignment`: (rows, cols), row-major, without repeats.

    The prices are entropic assignment duals (Sinkhorn) at falling temperatures. Each temperature
    costs one exponential of the matrix, stabilised by the row maxima at the prices so far (every
    entry in (0, 1], a 1 in each row); its ``inner`` scaling iterations are then matrix-vector
    products, so prices cost a few passes over the matrix rather than two per iteration.
    """
    n = a.shape[0]
    z = torch.from_numpy(np.ascontiguousarray(a)).float()
    z = (z - z.mean()) / z.std().clamp_min(1e-30)  # (n, n), unit spread: the temperatures are relative
    u, v = torch.zeros(n), torch.zeros(n)
    for tau in temps:
        w = z - v[None, :]
        u = w.amax(1)  # (n,)
        kernel = torch.exp_(w.sub_(u[:, None]).div_(tau))  # (n, n) in (0, 1]
        row, col = torch.ones(n), torch.ones(n)
        for _ in range(max(1, inner)):
            col = 1.0 / (row @ kernel).clamp_min(1e-30)
            row = 1.0 / (kernel @ col).clamp_min(1e-30)
        u, v = u - tau * torch.log(row), v - tau * torch.log(col)
    del kernel, w
    rows = torch.arange(n)
    keep = torch.zeros((n, n), dtype=torch.bool)
    keep[rows[:, None], (z - v[None, :]).topk(k, 1).indices] = True  # each row's k best at the column prices
    # each column's k best at the row prices, on the transpose: topk along contiguous memory is faster
    keep[(z.T.contiguous() - u[None, :]).topk(k, 1).indices.T, rows[None, :]] = True
    # A perfect matching among the candidates: the current assignment, or the identity.
    keep[rows, rows if current is None else torch.as_tensor(np.asarray(current), dtype=torch.long)] = True
    r, c = (t.numpy() for t in keep.nonzero(as_tuple=True))  # (E,), (E,), row-major
    return r, c


def _sparse_lap(n: int, r: np.ndarray, c: np.ndarray, w: np.ndarray, engine: str | None = None) -> np.ndarray:
    """Maximum-weight perfect matching on the edges (r, c) of weight w: OR-tools' cost-scaling
    assignment where it is installed (``pip install 'raytraj[fastlap]'``), else scipy's LAPJVsp."""
    if engine not in (None, "ortools", "scipy"):
        raise ValueError(f"unknown sparse LAP engine {engine!r}; choose ortools or scipy")
    lsa = _ortools() if engine != "scipy" else None
    if engine == "ortools" and lsa is None:
        raise ImportError("the ortools engine needs OR-tools: pip install 'raytraj[fastlap]'")
    if lsa is not None:
        # Integer costs: the weights' span becomes 2^60 / (n + 1)^2 steps (7e10 at n = 4096, far finer
        # than the float32 contractions' precision): OR-tools scales costs by n + 1 and bounds its price
        # changes by about n times more, which must stay within int64 (it warns of overflow above that).
        span = w.max() - w.min()
        cost = np.rint((w.max() - w) * (2.0**60 / (n + 1) ** 2 / span if span > 0 else 0.0)).astype(np.int64)
        solver = lsa.SimpleLinearSumAssignment()
        solver.add_arcs_with_cost(r.astype(np.int64), c.astype(np.int64), cost)
        if solver.solve() == solver.OPTIMAL:
            return np.fromiter((solver.right_mate(i) for i in range(n)), dtype=np.int64, count=n)
    # LAPJVsp reads an explicit 0 as no edge: shift every weight above zero (a constant added to
    # every entry adds n to every perfect matching's value, so it changes no choice).
    graph = csr_matrix((w - w.min() + 1.0, (r, c)), shape=(n, n))
    return min_weight_full_bipartite_matching(graph, maximize=True)[1]


def _ortools():
    """OR-tools' assignment module, or None where it is not installed (an optional extra)."""
    try:
        from ortools.graph.python import linear_sum_assignment as lsa
    except ImportError:
        return None
    return lsa


def solve_laps_sparse(costs: Sequence[np.ndarray], current: Sequence | None = None, *, k: int = SPARSE_K,
                      dense_below: int = 0, engine: str | None = None) -> list[np.ndarray]:
    """:func:`sparse_assignment` of each matrix; exact scipy for those narrower than ``dense_below``.

    Args:
        costs: square float matrices.
        current: per matrix, the group's current assignment (kept feasible; see above), or None.
        k: candidates per row and per column.
        dense_below: solve matrices narrower than this exactly.
        engine: the sparse solver (see :func:`sparse_assignment`).
    """
    _check_finite(costs)
    current = list(current) if current is not None else [None] * len(costs)
    out = []
    for a, cur in zip(costs, current):
        cur = None if cur is None else np.asarray(cur.cpu() if torch.is_tensor(cur) else cur)
        out.append(linear_sum_assignment(a, maximize=True)[1] if len(a) < dense_below
                   else sparse_assignment(a, k, cur, engine=engine))
    return out


solve_laps_sparse.takes_current = True  # type: ignore[attr-defined]


def solve_laps_auction(costs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`solve_laps_serial` for torch matrices, solved on their device, same-sized ones batched.

    Args:
        costs: square cost matrices (torch tensors, any float dtype, any device).

    Returns:
        one long tensor per matrix, on its device: row i goes to column result[i].
    """
    out: list[torch.Tensor | None] = [None] * len(costs)
    by_shape: dict[tuple, list[int]] = {}
    for i, a in enumerate(costs):
        by_shape.setdefault((tuple(a.shape), a.device), []).append(i)
    for idx in by_shape.values():
        cols = auction_assignment(torch.stack([costs[i] for i in idx]))
        for i, c in zip(idx, cols):
            out[i] = c
    return out  # type: ignore[return-value]


solve_laps_auction.on_device = True  # type: ignore[attr-defined]  # takes tensors where they are


def auction_assignment(costs: torch.Tensor, *, tie_rtol: float = 1e-9, theta: float = 8.0,
                       max_rounds: int = 200_000) -> torch.Tensor:
    """Maximum-weight assignments of a batch of n x n matrices by auction with epsilon-scaling.

    Args:
        costs: (B, n, n) tensor.
        tie_rtol: the optimality bound, as a fraction of each matrix's value range.
        theta: epsilon shrinks by this factor per phase.
        max_rounds: bidding rounds over all phases before a matrix falls back to scipy.

    Returns:
        (B, n) long tensor on the costs' device: row i of matrix b goes to column result[b, i].
    """
    if costs.dim() != 3 or costs.shape[1] != costs.shape[2]:
        raise ValueError(f"expected a batch of square matrices, got shape {tuple(costs.shape)}")
    a = costs.double()
    batch, n, _ = a.shape
    device = a.device
    if n < 2:
        return torch.zeros((batch, n), dtype=torch.long, device=device)
    flat = a.reshape(batch, -1)
    # A constant shift changes no assignment's rank; removing it keeps the prices' precision at
    # the scale of the differences (1e6 + 1e-9 x small integers is a fair cost matrix).
    low = flat.min(1).values
    a = a - low[:, None, None]
    span = flat.max(1).values - low  # (B,)
    if not bool(torch.isfinite(span).all()):
        raise FloatingPointError("a LAP cost matrix holds NaN or inf values")
    span = torch.where(span > 0, span, torch.ones_like(span))  # constant matrices: every assignment ties
    eps_final = span * tie_rtol / n  # (B,)
    eps = span / 4
    prices = torch.zeros((batch, n), dtype=a.dtype, device=device)
    rows = torch.arange(n, device=device)
    rounds = 0
    row_to_col = torch.full((batch, n), -1, dtype=torch.long, device=device)
    col_to_row = torch.full((batch, n), -1, dtype=torch.long, device=device)
    while True:
        # A phase keeps the prices and the assignments that are still eps-optimal at the new eps
        # (epsilon-scaling's warm start); every other row bids again.
        assigned = row_to_col >= 0
        profit = (a - prices[:, None, :]).max(2).values
        held = a.gather(2, row_to_col.clamp(min=0)[..., None]).squeeze(2) - prices.gather(1, row_to_col.clamp(min=0))
        keep = assigned & (held >= profit - eps[:, None])
        row_to_col = torch.where(keep, row_to_col, torch.full_like(row_to_col, -1))
        col_to_row = torch.full((batch, n), -1, dtype=torch.long, device=device)
        kb, kr = keep.nonzero(as_tuple=True)
        col_to_row[kb, row_to_col[kb, kr]] = kr
        while rounds < max_rounds:
            rounds += 1
            free = row_to_col < 0  # (B, n)
            values = a - prices[:, None, :]  # (B, rows, cols): each row's profit at each column
            top = values.topk(2, dim=2)  # best and second-best profit per row
            best_col = top.indices[..., 0]
            bid = prices.gather(1, best_col) + (top.values[..., 0] - top.values[..., 1]) + eps[:, None]
            bid = torch.where(free, bid, torch.full_like(bid, -torch.inf))
            # Each column goes to its highest bidder (the lowest row among equal bids).
            high = torch.full((batch, n), -torch.inf, dtype=a.dtype, device=device)
            high = high.scatter_reduce(1, best_col, bid, reduce="amax")
            wins = free & (bid == high.gather(1, best_col)) & torch.isfinite(bid)
            bidder = torch.where(wins, rows[None, :].expand(batch, n), torch.full_like(best_col, n))
            winner = torch.full((batch, n), n, dtype=torch.long, device=device)
            winner = winner.scatter_reduce(1, best_col, bidder, reduce="amin")  # (B, cols); n: no bid
            taken = winner < n
            # The columns' previous owners lose them; the winners take them at their bid.
            loser = torch.where(taken, col_to_row, torch.full_like(col_to_row, -1))
            lb, lc = (loser >= 0).nonzero(as_tuple=True)
            row_to_col[lb, loser[lb, lc]] = -1
            wb, wc = taken.nonzero(as_tuple=True)
            row_to_col[wb, winner[wb, wc]] = wc
            col_to_row[wb, wc] = winner[wb, wc]
            prices[wb, wc] = high[wb, wc]
            if rounds % 4 == 0 and not bool((row_to_col < 0).any()):
                break
        done = bool((row_to_col >= 0).all())
        if not done or bool((eps <= eps_final).all()):
            break
        eps = torch.maximum(eps / theta, eps_final)
    return _certified(a, row_to_col, prices, eps_final, done)


def _certified(a: torch.Tensor, row_to_col: torch.Tensor, prices: torch.Tensor, eps_final: torch.Tensor,
               done: bool) -> torch.Tensor:
    """The auction's assignments where the dual bound proves them optimal up to ties; scipy's elsewhere."""
    batch, n, _ = a.shape
    ok = torch.zeros(batch, dtype=torch.bool, device=a.device)
    if done:
        u = (a - prices[:, None, :]).max(2).values
        value = a.gather(2, row_to_col[..., None]).squeeze(2).sum(1)
        gap = u.sum(1) + prices.sum(1) - value  # >= 0: dual minus primal
        ok = gap <= n * eps_final * (1 + 1e-6) + 1e-12 * a.abs().amax((1, 2))
    out = row_to_col.clone()
    for b in (~ok).nonzero().flatten().tolist():
        cols = linear_sum_assignment(a[b].cpu().numpy(), maximize=True)[1]
        out[b] = torch.as_tensor(cols, dtype=torch.long, device=a.device)
    auction_assignment.fallbacks += int((~ok).sum())  # type: ignore[attr-defined]
    return out


auction_assignment.fallbacks = 0  # type: ignore[attr-defined]  # matrices scipy had to solve, for tests


def lap_solver(name: str, device, default: LapSolver = solve_laps_serial) -> LapSolver:
    """The LAP solver for ``name`` when the cost matrices live on ``device``.

    Args:
        name: ``scipy`` exact; ``sparse`` the candidate-restricted solver for groups ``SPARSE_FROM``
            or more wide and ``default`` for the rest; ``auction`` the torch auction; ``auto`` the
            auction when ``device`` is a GPU, else ``default``. ``auto`` never depends on which extras
            are installed, so a seed gives the same permutations on every machine and on Ray's ranks
            (which solve with scipy).
        device: where the pair bank keeps its tensors (None: the CPU).
        default: the exact CPU solver (a backend may spread scipy's LAPs over workers).
    """
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if name == "scipy":
        return default
    if name == "sparse":
        return _wide_sparse(default)
    if name == "auction":
        if not on_gpu:
            warnings.warn("--lap auction on the CPU: it measured 73-269x slower than scipy there "
                          "(benchmarks/results/cost.md); use --lap auto, scipy or sparse on a CPU", RuntimeWarning,
                          stacklevel=2)
        return solve_laps_auction
    if name != "auto":
        raise ValueError(f"unknown LAP solver {name!r}; choose auto, scipy, sparse or auction")
    if on_gpu:
        return solve_laps_auction
    return default


def _wide_sparse(default: LapSolver) -> LapSolver:
    """``default`` below ``SPARSE_FROM`` units, the sparse solver from there."""
    def solve(costs: Sequence[np.ndarray], current: Sequence | None = None) -> list[np.ndarray]:
        current = list(current) if current is not None else [None] * len(costs)
        narrow = [i for i, a in enumerate(costs) if len(a) < SPARSE_FROM]
        out: list = [None] * len(costs)
        if narrow:
            for i, cols in zip(narrow, default([costs[i] for i in narrow])):
                out[i] = cols
        wide = [i for i in range(len(costs)) if out[i] is None]
        if wide:
            for i, cols in zip(wide, solve_laps_sparse([costs[i] for i in wide], [current[i] for i in wide])):
                out[i] = cols
        return out

    solve.takes_current = True  # type: ignore[attr-defined]
    return solve
