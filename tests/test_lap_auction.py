"""The torch auction LAP solver: the same optimum as scipy, batched, on the matrices' device."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from raytraj.perm import lap_solver, match, solve_laps_auction, solve_laps_serial
from raytraj.perm.lap import auction_assignment

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def value(a: np.ndarray, cols) -> float:
    return float(a[np.arange(len(a)), np.asarray(cols)].sum())


def is_permutation(cols, n) -> bool:
    return sorted(np.asarray(cols).tolist()) == list(range(n))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_random_matrices_give_scipys_assignment(device, n):
    g = torch.Generator().manual_seed(n)
    costs = [torch.randn(n, n, generator=g, dtype=torch.float64).to(device) for _ in range(3)]
    got = solve_laps_auction(costs)
    want = solve_laps_serial([c.cpu().numpy() for c in costs])
    for c, cols, ref in zip(costs, got, want):
        assert cols.device.type == torch.device(device).type and cols.dtype == torch.long
        # continuous random entries: the optimum is unique, so the assignment is scipy's
        np.testing.assert_array_equal(cols.cpu().numpy(), ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["integers", "constant", "duplicate rows", "rank one", "scaled"])
def test_tied_matrices_reach_scipys_optimum(device, kind):
    g = torch.Generator().manual_seed(3)
    n = 24
    if kind == "integers":
        a = torch.randint(0, 3, (n, n), generator=g).double()
    elif kind == "constant":
        a = torch.full((n, n), 2.5, dtype=torch.float64)
    elif kind == "duplicate rows":
        a = torch.randn(4, n, generator=g, dtype=torch.float64).repeat(n // 4, 1)
    elif kind == "rank one":
        u = torch.randint(1, 4, (n, 1), generator=g).double()
        a = u @ u.T
    else:  # tiny and huge scales: the tolerances are relative to the matrix's range
        a = torch.randint(0, 5, (n, n), generator=g).double() * 1e-9 + 1e6
    before = auction_assignment.fallbacks
    cols = solve_laps_auction([a.to(device)])[0].cpu().numpy()
    ref = linear_sum_assignment(a.numpy(), maximize=True)[1]
    assert is_permutation(cols, n)
    assert value(a.numpy(), cols) == pytest.approx(value(a.numpy(), ref), rel=1e-12, abs=1e-12 * float(a.abs().max()))
    assert auction_assignment.fallbacks == before  # the dual bound proved it; scipy was not needed


def test_a_batch_of_mixed_sizes_keeps_its_order():
    g = torch.Generator().manual_seed(0)
    costs = [torch.randn(n, n, generator=g, dtype=torch.float64) for n in (5, 9, 5, 3, 9)]
    got = solve_laps_auction(costs)
    for c, cols in zip(costs, got):
        assert len(cols) == len(c)
        np.testing.assert_array_equal(cols.numpy(), linear_sum_assignment(c.numpy(), maximize=True)[1])


def test_an_auction_cut_short_falls_back_to_scipy():
    a = torch.randn(1, 30, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = auction_assignment.fallbacks
    cols = auction_assignment(a, max_rounds=2)[0].numpy()
    assert auction_assignment.fallbacks == before + 1
    np.testing.assert_array_equal(cols, linear_sum_assignment(a[0].numpy(), maximize=True)[1])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="square"):
        auction_assignment(torch.zeros(2, 3, 4))
    with pytest.raises(FloatingPointError):
        auction_assignment(torch.tensor([[[0.0, float("nan")], [1.0, 2.0]]]))


def test_choice_of_solver(monkeypatch):
    import raytraj.perm.lap as lap

    monkeypatch.setattr(lap, "_ortools", lambda: None)  # without OR-tools, auto is exact scipy on the CPU
    assert lap_solver("auto", "cpu") is solve_laps_serial
    assert lap_solver("auto", None) is solve_laps_serial
    assert lap_solver("auto", "cuda:0") is solve_laps_auction
    with pytest.warns(RuntimeWarning, match="slower than scipy"):  # the auction on a CPU
        assert lap_solver("auction", "cpu") is solve_laps_auction
    assert lap_solver("scipy", "cuda") is solve_laps_serial
    assert getattr(lap_solver("sparse", None), "takes_current", False)
    spread = object()  # a backend's own exact solver (the Ray backend spreads scipy's LAPs) stays the auto choice
    assert lap_solver("auto", "cpu", spread) is spread
    monkeypatch.setattr(lap, "_ortools", lambda: object())  # with it too: auto never depends on the extras
    assert lap_solver("auto", "cpu") is solve_laps_serial
    assert lap_solver("auto", "cuda:0") is solve_laps_auction
    with pytest.raises(ValueError, match="unknown LAP solver"):
        lap_solver("hungarian", "cpu")


def test_matching_with_the_auction_equals_matching_with_scipy():
    from raytraj.models import build_model, config_for_data
    from raytraj.perm import infer_spec

    model = build_model(config_for_data("mlp", (1, 8, 8), 10, hidden=(24, 16)), seed=0)
    spec = infer_spec(model, torch.randn(4, 1, 8, 8))
    g = torch.Generator().manual_seed(2)
    pairs = [({k: torch.randn(s, generator=g) for k, s in spec.shapes.items()},
              {k: torch.randn(s, generator=g) for k, s in spec.shapes.items()}) for _ in range(3)]
    perm_s, info_s = match(spec, pairs, seed=0)
    perm_a, info_a = match(spec, pairs, seed=0, solve_laps=solve_laps_auction)
    assert all(torch.equal(perm_s[k], perm_a[k]) for k in spec.sizes)
    assert info_a["laps"] == info_s["laps"] and info_a["objective"] == pytest.approx(info_s["objective"])
