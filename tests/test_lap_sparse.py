"""The sparse top-k LAP solver: feasible always, never below the current assignment, exact where k covers."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from raytraj.perm.lap import solve_laps_sparse, sparse_assignment


def _value(a, cols):
    return a[np.arange(len(a)), cols].sum()


def _lowrank(n, seed, rank=4, noise=0.3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n)) + noise * rng.standard_normal((n, n))


def test_the_sparse_assignment_is_a_permutation_near_the_optimum():
    for seed in range(3):
        a = _lowrank(200, seed)
        cols = sparse_assignment(a, k=16)
        assert sorted(cols.tolist()) == list(range(200))
        best = _value(a, linear_sum_assignment(a, maximize=True)[1])
        start = _value(a, np.arange(200))
        assert _value(a, cols) <= best + 1e-9
        assert best - _value(a, cols) < 0.01 * (best - start)  # within 1% of the way from identity to the optimum


def test_k_as_wide_as_the_matrix_is_exact_and_zeros_and_negative_costs_are_edges():
    a = np.array([[0.0, -1.0, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, -5.0]])  # explicit zeros must count as edges
    got = sparse_assignment(a, k=3)
    assert _value(a, got) == _value(a, linear_sum_assignment(a, maximize=True)[1]) == 0.0


def test_the_current_assignment_keeps_it_feasible_and_is_never_beaten_downward():
    # A matrix whose top-1 entries all sit in one column: top-k rows alone have no perfect matching.
    n = 50
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n))
    a[:, 0] += 100
    current = rng.permutation(n)
    got = solve_laps_sparse([a], [current], k=1)[0]
    assert sorted(got.tolist()) == list(range(n))
    assert _value(a, got) >= _value(a, current) - 1e-9
    got = solve_laps_sparse([a], k=1)[0]  # without it, the identity keeps the candidates feasible
    assert sorted(got.tolist()) == list(range(n)) and _value(a, got) >= _value(a, np.arange(n)) - 1e-9


def test_narrow_matrices_are_solved_exactly_and_bad_values_named():
    a = _lowrank(64, 5, noise=0.01)
    assert (solve_laps_sparse([a], dense_below=100)[0] == linear_sum_assignment(a, maximize=True)[1]).all()
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        solve_laps_sparse([np.full((3, 3), np.nan)])
