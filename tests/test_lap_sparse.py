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


ENGINES = ["scipy", pytest.param("ortools", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("ortools") is None, reason="OR-tools (the fastlap extra) not installed"))]


def _planted(n, seed, noise=0.05):
    """Gradient-matching-like costs with a known best assignment: a = T S^T with S a permuted, noisy T."""
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((n, 3 * n // 4))
    perm = rng.permutation(n)
    return t @ (t[np.argsort(perm)] + noise * rng.standard_normal(t.shape)).T, perm  # a_ij peaks where j = perm[i]


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_finds_the_exact_optimum_on_random_and_planted_costs(engine):
    for seed in range(3):
        for a in (np.random.default_rng(seed).standard_normal((120, 120)), _lowrank(150, seed, noise=0.5)):
            exact = _value(a, linear_sum_assignment(a, maximize=True)[1])
            got = sparse_assignment(a, k=16, current=np.random.default_rng(seed).permutation(len(a)), engine=engine)
            assert sorted(got.tolist()) == list(range(len(a)))
            assert abs(_value(a, got) - exact) <= 1e-9 * abs(exact)
        a, planted = _planted(100, seed)
        got = sparse_assignment(a, k=8, engine=engine)
        assert (got == planted).all() and (linear_sum_assignment(a, maximize=True)[1] == planted).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_never_returns_worse_than_the_current_assignment(engine):
    rng = np.random.default_rng(1)
    for trial in range(5):
        a = _lowrank(90, trial, noise=0.1)
        a[:, trial] += 50  # a hub column: the candidates are poor, the current assignment must still hold
        current = linear_sum_assignment(a, maximize=True)[1] if trial % 2 else rng.permutation(90)
        got = solve_laps_sparse([a], [current], k=2, engine=engine)[0]
        assert sorted(got.tolist()) == list(range(90))
        assert _value(a, got) >= _value(a, current)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        solve_laps_sparse([np.where(np.eye(90, dtype=bool), np.inf, 0.0)], engine=engine)


def test_sparse_solves_wide_groups_sparse_and_narrow_ones_with_the_default(monkeypatch):
    import raytraj.perm.lap as lap

    monkeypatch.setattr(lap, "SPARSE_FROM", 100)
    calls = []

    def default(costs):
        calls.append([len(a) for a in costs])
        return [linear_sum_assignment(a, maximize=True)[1] for a in costs]

    solver = lap.lap_solver("sparse", "cpu", default)
    narrow, wide = _lowrank(60, 0), _lowrank(140, 1)
    got = solver([wide, narrow], [np.arange(140), np.arange(60)])
    assert calls == [[60]]  # only the narrow group went to the exact default
    for a, cols in zip((wide, narrow), got):
        assert abs(_value(a, cols) - _value(a, linear_sum_assignment(a, maximize=True)[1])) <= 1e-9 * abs(_value(a, cols))
    with pytest.raises(ValueError, match="unknown sparse LAP engine"):
        solve_laps_sparse([wide], engine="gurobi")


def test_the_ray_backend_refuses_a_lap_solver_it_would_not_use():
    from raytraj.config import ConfigError
    from raytraj.transfer import TransferConfig
    from raytraj.transfer.run import make_backend

    for name in ("sparse", "auction"):  # checked before any worker starts: no problem or Ray needed
        with pytest.raises(ConfigError, match=f"--lap {name} runs on --backend local only"):
            make_backend(None, TransferConfig(lap=name), "ray")
