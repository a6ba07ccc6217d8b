"""Linear assignment problems (LAPs): scipy on the CPU, a sparse one for wide groups, and a batched
torch auction for devices.

Coordinate descent solves one maximum-weight assignment per permutation group. scipy's
``linear_sum_assignment`` is the fastest exact CPU solver we measured, but it is cubic: a 2048-wide
group costs seconds per solve. :func:`solve_laps_sparse` solves the assignment restricted to each
row's and each column's ``k`` best entries at approximate prices, plus the group's current
assignment (scipy's sparse Jonker-Volgenant, ``min_weight_full_bipartite_matching``): the current
assignment keeps the restricted problem feasible and its answer never worse than the current one,
so coordinate descent still rises monotonically. On the CPU it measured no faster than the exact
solve up to 2048 units, so it is opt-in (``--lap sparse``). On a GPU, :func:`solve_laps_auction` solves all same-sized
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

# Candidates per row and per column of the sparse solver, its Sinkhorn iterations and last temperature
# (see sparse_assignment). On gradient-matching costs of MLPs 1024 and 2048 wide it ends within 0.1% of
# the optimum, but is no faster than scipy's exact solve there (benchmarks/results/cost.md): ``auto``
# keeps scipy on the CPU.
SPARSE_K = 32
SPARSE_ITERS = 5
SPARSE_TAU = 0.02


def _check_finite(costs) -> None:
    if not all(np.isfinite(a).all() for a in costs):  # scipy's own error names no cause
        raise FloatingPointError("a LAP cost matrix holds NaN or inf values")


def solve_laps_serial(costs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Maximum-weight assignment of each square matrix; row i goes to column result[i]."""
    _check_finite(costs)
    return [linear_sum_assignment(a, maximize=True)[1] for a in costs]


def sparse_assignment(a: np.ndarray, k: int = SPARSE_K, current: np.ndarray | None = None,
                      iters: int = SPARSE_ITERS) -> np.ndarray:
    """The maximum-weight assignment of ``a`` among a few candidate entries per row and column.

    Plain top-k candidates fail on gradient-matching costs: they are nearly low-rank, so every
    row's largest entries sit in the same few "hub" columns, and the best assignment inside them
    was 15-50% short of the optimum (of the way from a random assignment to it). So candidates
    are ranked by reduced cost instead, a_ij - v_j per row and a_ij - u_i per column, with prices
    (u, v) from ``iters`` log-domain Sinkhorn iterations at falling temperature: approximate
    duals of the assignment LP, under which the optimum's entries rank first.

    Args:
        a: (n, n) float cost matrix.
        k: candidates per row and per column.
        current: (n,) an assignment kept among the candidates (row i -> column current[i]; the
            identity when None): the candidate graph always has a perfect matching, and the answer
            is at least as good as it.
        iters: Sinkhorn iterations.

    Returns:
        (n,) column of each row.
    """
    n = a.shape[0]
    if n <= 2 * k:
        return linear_sum_assignment(a, maximize=True)[1]
    z = torch.from_numpy(np.ascontiguousarray(a)).float()
    z = (z - z.mean()) / z.std().clamp_min(1e-30)  # (n, n), unit spread: the temperatures below are relative
    v = torch.zeros(n)
    for tau in np.geomspace(1.0, SPARSE_TAU, max(1, iters)):  # from the costs' spread down to SPARSE_TAU of it
        u = tau * torch.logsumexp((z - v[None, :]) / tau, 1)  # (n,) row prices
        v = tau * torch.logsumexp((z - u[:, None]) / tau, 0)  # (n,) column prices
    rows = torch.arange(n)
    keep = torch.zeros((n, n), dtype=torch.bool)
    keep[rows[:, None], (z - v[None, :]).topk(k, 1).indices] = True  # each row's k best at the column prices
    keep[(z - u[:, None]).topk(k, 0).indices, rows[None, :]] = True  # each column's k best at the row prices
    # A perfect matching among the candidates: the current assignment, or the identity.
    keep[rows, rows if current is None else torch.as_tensor(np.asarray(current), dtype=torch.long)] = True
    r, c = (t.numpy() for t in keep.nonzero(as_tuple=True))  # (E,), (E,), row-major
    return _sparse_lap(n, r, c, a[r, c])


def _sparse_lap(n: int, r: np.ndarray, c: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Maximum-weight perfect matching on the edges (r, c) of weight w (scipy's LAPJVsp)."""
    # LAPJVsp reads an explicit 0 as no edge: shift every weight above zero (a constant added to
    # every entry adds n to every perfect matching's value, so it changes no choice).
    graph = csr_matrix((w - w.min() + 1.0, (r, c)), shape=(n, n))
    return min_weight_full_bipartite_matching(graph, maximize=True)[1]


def solve_laps_sparse(costs: Sequence[np.ndarray], current: Sequence | None = None, *, k: int = SPARSE_K,
                      dense_below: int = 0, iters: int = SPARSE_ITERS) -> list[np.ndarray]:
    """:func:`sparse_assignment` of each matrix; exact scipy for those narrower than ``dense_below``.

    Args:
        costs: square float matrices.
        current: per matrix, the group's current assignment (kept feasible; see above), or None.
        k: candidates per row and per column.
        dense_below: solve matrices narrower than this exactly.
        iters: Sinkhorn iterations for the candidates' prices.
    """
    _check_finite(costs)
    current = list(current) if current is not None else [None] * len(costs)
    out = []
    for a, cur in zip(costs, current):
        cur = None if cur is None else np.asarray(cur.cpu() if torch.is_tensor(cur) else cur)
        out.append(linear_sum_assignment(a, maximize=True)[1] if len(a) < dense_below
                   else sparse_assignment(a, k, cur, iters))
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
        name: ``scipy`` exact; ``sparse`` the candidate-restricted solver; ``auction`` the torch
            auction; ``auto`` the auction when ``device`` is a GPU, else ``default``.
        device: where the pair bank keeps its tensors (None: the CPU).
        default: the exact CPU solver (a backend may spread scipy's LAPs over workers).
    """
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if name == "scipy":
        return default
    if name == "sparse":
        return solve_laps_sparse
    if name == "auction":
        if not on_gpu:
            warnings.warn("--lap auction on the CPU: it measured 73-269x slower than scipy there "
                          "(benchmarks/results/cost.md); use --lap auto, scipy or sparse on a CPU", RuntimeWarning,
                          stacklevel=2)
        return solve_laps_auction
    if name != "auto":
        raise ValueError(f"unknown LAP solver {name!r}; choose auto, scipy, sparse or auction")
    return solve_laps_auction if on_gpu else default
