"""When the per-step solve stops: self-coupled groups, the relative rule, and what is reported."""

import pytest
import torch
import torch.nn as nn

from raytraj.perm import (
    PairBank,
    PermutationSpec,
    apply_permutation,
    identity_permutation,
    infer_spec,
    match,
    random_permutation,
)
from raytraj.perm.descent import self_coupled_groups


class ResidualMLP(nn.Module):
    """h + relu(R h): R sits on both axes of one group."""

    def __init__(self, width=32):
        super().__init__()
        self.inp, self.r, self.out = nn.Linear(10, width), nn.Linear(width, width), nn.Linear(width, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.relu(self.r(h)))


def noisy_planted_pair(noise=1.0, seed=0):
    torch.manual_seed(seed)
    model = ResidualMLP()
    spec = infer_spec(model, torch.randn(4, 10))
    theta = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    planted = random_permutation(spec, g)
    target = {k: v + noise * v.std() * torch.randn(v.shape, generator=g)
              for k, v in apply_permutation(spec, planted, theta).items()}
    return spec, [(target, theta)]


def test_residual_mlp_spec_is_self_coupled():
    spec, _ = noisy_planted_pair()
    assert self_coupled_groups(spec) == set(spec.sizes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_coupled_group_is_solved_until_the_true_objective_stops_rising(seed):
    spec, pairs = noisy_planted_pair(seed=seed)
    perm, info = match(spec, pairs, seed=0)
    assert info["converged"]
    assert info["laps"] >= 2  # the group moved, so its cost changed and it was solved again
    # Converged means no further LAP raises the true objective.
    _, again = match(spec, pairs, init=perm, seed=5)
    assert again["objective"] <= info["objective"] + 1e-6 * abs(info["objective"])
    # ... and no sweep lowered it.
    assert all(gain >= 0 for gain in info["gains"])


def _random_pairs(spec, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [({k: torch.randn(s, generator=g) for k, s in spec.shapes.items()},
             {k: torch.randn(s, generator=g) for k, s in spec.shapes.items()}) for _ in range(n)]


def test_the_true_objective_never_falls_on_random_self_coupled_pairs():
    spec, _ = noisy_planted_pair()
    pairs = _random_pairs(spec, 3, 0)
    start = PairBank(spec)
    for t, s in pairs:
        start.add(t, s)
    at_identity = start.objective(identity_permutation(spec))
    perm, info = match(spec, pairs, seed=0)
    assert info["objective"] >= at_identity - 1e-9
    assert all(gain >= 0 for gain in info["gains"])


def mlp_spec_and_pairs(n_pairs=6, seed=0):
    from raytraj.models import build_model, config_for_data

    model = build_model(config_for_data("mlp", (1, 8, 8), 10, hidden=(48, 40)), seed=seed)
    spec = infer_spec(model, torch.randn(4, 1, 8, 8))
    return spec, _random_pairs(spec, n_pairs, seed)


def test_relative_rule_stops_no_later_than_the_absolute_one_and_by_its_own_threshold():
    spec, pairs = mlp_spec_and_pairs()
    _, paper = match(spec, pairs, seed=0)
    _, rel = match(spec, pairs, seed=0, rtol=1e-2)
    assert rel["sweeps"] <= paper["sweeps"] and rel["laps"] <= paper["laps"]
    assert rel["converged"] and paper["converged"]
    # The last sweep gained less than rtol x objective; every sweep before it gained more.
    assert rel["gains"][-1] <= 1e-2 * abs(rel["objective"]) + 1e-7
    assert all(g > 1e-2 * abs(rel["objective"]) * 0.5 for g in rel["gains"][:-1])
    # Same sweeps up to the stop: the relative rule only cuts the tail.
    assert rel["gains"] == pytest.approx(paper["gains"][: len(rel["gains"])])


def test_hitting_max_sweeps_is_reported_as_unconverged():
    spec, pairs = mlp_spec_and_pairs()
    _, info = match(spec, pairs, seed=0, max_sweeps=1)
    assert info["sweeps"] == 1 and not info["converged"]


def head_spec_and_pairs(seed, n_pairs=2, heads=4, dims=3, res=6):
    """Attention-like segmented axes (heads x dims): solves that take block restarts."""
    t = {"q": torch.zeros(heads * dims, res), "k": torch.zeros(heads * dims, res), "o": torch.zeros(res, heads * dims),
         "emb": torch.zeros(res, 5), "b": torch.zeros(dims)}
    spec = PermutationSpec.from_axes({"q": (("heads", "dims"), "res"), "k": (("heads", "dims"), "res"),
                                      "o": ("res", ("heads", "dims")), "emb": ("res", None), "b": ("dims",)},
                                     t, group_sizes={"heads": heads})
    return spec, _random_pairs(spec, n_pairs, seed)


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_the_sweep_cap_is_a_total_budget_over_block_restarts(cap):
    infos = [match(*head_spec_and_pairs(seed), seed=seed, max_sweeps=cap)[1] for seed in range(12)]
    assert all(info["sweeps"] <= cap for info in infos), [info["sweeps"] for info in infos]
    assert any(info["restarts"] for info in infos)  # the block restart path is exercised
    # A solve cut by the cap is not converged, whichever descent the cap cut.
    assert all(not info["converged"] for info in infos if info["sweeps"] == cap and info["gains"][-1] > 1e-7)


def test_uncapped_solves_with_restarts_converge_and_report_their_total_sweeps():
    for seed in range(12):
        spec, pairs = head_spec_and_pairs(seed)
        _, info = match(spec, pairs, seed=seed)
        assert info["converged"] and info["sweeps"] == len(info["gains"]) <= 100


def test_rtol_ignores_the_inner_products_no_permutation_touches():
    spec, pairs = mlp_spec_and_pairs()
    fixed = [n for n, axes in spec.axes.items() if all(a is None for a in axes)]
    assert fixed  # the head's bias: no permutation touches it
    # Huge inner products of the untouched tensors: they scale the objective, not what a sweep can gain.
    def inflate(tensors):
        return {**tensors, **{n: torch.full_like(tensors[n], 1e3) for n in fixed}}

    big = [(inflate(t), inflate(s)) for t, s in pairs]
    perm, small = match(spec, pairs, seed=0, rtol=1e-3)
    perm_big, large = match(spec, big, seed=0, rtol=1e-3)
    assert small["sweeps"] >= 2
    assert large["sweeps"] == small["sweeps"] and all(torch.equal(perm[g], perm_big[g]) for g in spec.sizes)
    assert large["objective"] > small["objective"] + 1e6  # ... though the objective reports them
