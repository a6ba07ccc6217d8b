"""The matching solver: planted recovery from weights and from gradients, and its contracts."""

import pytest
import torch
import torch.nn.functional as F

from raytraj.models import build_model, config_for_data
from raytraj.perm import (
    PairBank,
    PermutationSpec,
    SpecError,
    apply_permutation,
    color_groups,
    identity_permutation,
    infer_spec,
    match,
    random_permutation,
)
from raytraj.perm.apply import permute_tensor

ZOO = {
    "mlp": ((1, 8, 8), {"hidden": (64, 48)}),
    "conv": ((3, 16, 16), {"width": 0.125}),
    "resnet20": ((3, 16, 16), {"width": 0.5}),
    "conv1d": ((1, 40), {"batch_norm": True}),
}


def setup(key, seed=0):
    shape, overrides = ZOO[key]
    model = build_model(config_for_data(key, shape, 10, **overrides), seed=seed)
    x = torch.randn(32, *shape, generator=torch.Generator().manual_seed(seed + 1))
    spec = infer_spec(model, x[:4])
    return model, x, spec


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("key", sorted(ZOO))
def test_planted_recovery_from_weights(key):
    model, _, spec = setup(key)
    theta = model.state_dict()
    planted = random_permutation(spec, torch.Generator().manual_seed(7))
    theta2 = apply_permutation(spec, planted, theta)
    perm, info = match(spec, [(theta2, theta)], seed=3)
    assert all(torch.equal(perm[g], planted[g]) for g in spec.sizes)
    assert_same(apply_permutation(spec, perm, theta), theta2)
    assert info["converged"] and info["sweeps"] >= 2
    # planted optimum: <theta2, perm(theta)> = |theta|^2
    assert info["objective"] == pytest.approx(sum(float((v.float() ** 2).sum()) for v in theta.values()), rel=1e-5)


def gradients(model, state, x, y):
    params = {k: v.clone().requires_grad_(True) for k, v in state.items() if k in dict(model.named_parameters())}
    buffers = {k: v.clone() for k, v in state.items() if k not in params}
    model.train()
    loss = F.cross_entropy(torch.func.functional_call(model, {**params, **buffers}, (x,)), y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def live_units(spec, grads, group):
    """Units of ``group`` with any nonzero gradient: only these can be identified from gradients."""
    alive = torch.zeros(spec.sizes[group], dtype=torch.bool)
    for name, axis in spec.groups[group]:
        if name in grads:
            alive |= torch.movedim(grads[name], axis, 0).reshape(spec.sizes[group], -1).abs().sum(1) > 0
    return alive


@pytest.mark.parametrize("key", sorted(ZOO))
def test_planted_recovery_from_gradients(key):
    model, x, spec = setup(key)
    y = torch.arange(len(x)) % 10
    theta = model.state_dict()
    planted = random_permutation(spec, torch.Generator().manual_seed(11))
    theta2 = apply_permutation(spec, planted, theta)
    g1, g2 = gradients(model, theta, x, y), gradients(model, theta2, x, y)
    perm, _ = match(spec, [(g2, g1)], seed=0)
    for g in spec.sizes:
        alive = live_units(spec, g2, g)
        assert torch.equal(perm[g][alive], planted[g][alive]), g
        # dead units (zero gradient on the batch) can only be matched among themselves
        assert set(perm[g][~alive].tolist()) == set(planted[g][~alive].tolist())
    if key == "resnet20":  # BatchNorm before every ReLU keeps all of its units alive
        assert all(bool(live_units(spec, g2, g).all()) for g in spec.sizes)
        assert_same(apply_permutation(spec, perm, theta), theta2)


def naive_cost(spec, pairs, perm, group):
    n = spec.sizes[group]
    expected = torch.zeros(n, n)
    for t, s in pairs:
        for name, axis in spec.groups[group]:
            src = permute_tensor(s[name], spec.axes[name], perm, skip_axis=axis)
            expected += torch.movedim(t[name], axis, 0).reshape(n, -1) @ torch.movedim(src, axis, 0).reshape(n, -1).T
    return expected


def test_cached_costs_equal_a_fresh_sum_of_per_pair_terms():
    _, _, spec = setup("resnet20")
    gen = torch.Generator().manual_seed(0)

    def pair():
        return tuple({k: torch.randn(s, generator=gen) for k, s in spec.shapes.items() if "num_batches" not in k}
                     for _ in range(2))

    pairs = [pair() for _ in range(3)]
    bank = PairBank(spec)
    for t, s in pairs:
        bank.add(t, s)
    perm = random_permutation(spec, gen)
    for g in spec.sizes:
        torch.testing.assert_close(bank.cost(g, perm), naive_cost(spec, pairs, perm, g).double(), rtol=1e-4, atol=1e-3)
    # a few units move (the incremental path), then a pair arrives (added to the caches)
    for g in list(perm)[::2]:
        perm[g] = perm[g].clone()
        perm[g][[0, 1]] = perm[g][[1, 0]]
    pairs.append(pair())
    bank.add(*pairs[-1])
    for g in spec.sizes:
        torch.testing.assert_close(bank.cost(g, perm), naive_cost(spec, pairs, perm, g).double(), rtol=1e-4, atol=1e-3)
    # and most units move (a full recompute)
    perm = random_permutation(spec, gen)
    for g in spec.sizes:
        torch.testing.assert_close(bank.cost(g, perm), naive_cost(spec, pairs, perm, g).double(), rtol=1e-4, atol=1e-3)


def test_pairs_may_hold_a_subset_and_objective_counts_every_pair():
    _, _, spec = setup("mlp")
    gen = torch.Generator().manual_seed(0)
    full = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    sub = {k: v for k, v in full.items() if k.endswith("weight")}
    bank = PairBank(spec)
    bank.add(full, full)
    bank.add(sub, sub)
    ident = identity_permutation(spec)
    expected = sum(float((v ** 2).sum()) for v in full.values()) + sum(float((v ** 2).sum()) for v in sub.values())
    assert bank.objective(ident) == pytest.approx(expected, rel=1e-5)


def test_seeded_and_warm_started():
    model, x, spec = setup("conv")
    gen = torch.Generator().manual_seed(0)
    a = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    b = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    p1, i1 = match(spec, [(a, b)], seed=5)
    p2, i2 = match(spec, [(a, b)], seed=5)
    assert all(torch.equal(p1[g], p2[g]) for g in spec.sizes) and i1 == {**i2, "cost_s": i1["cost_s"], "lap_s": i1["lap_s"]}
    p3, i3 = match(spec, [(a, b)], seed=5, init=p1)
    assert i3["sweeps"] == 1 and i3["objective"] >= i1["objective"] - 1e-6


def test_normalize_is_invariant_to_pair_scale():
    _, _, spec = setup("mlp")
    gen = torch.Generator().manual_seed(0)
    a = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    b = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    c = {k: torch.randn(s, generator=gen) for k, s in spec.shapes.items()}
    p1, _ = match(spec, [(a, b), (c, b)], normalize=True)
    p2, _ = match(spec, [({k: 1e3 * v for k, v in a.items()}, b), (c, b)], normalize=True)
    assert all(torch.equal(p1[g], p2[g]) for g in spec.sizes)


def test_color_classes_share_no_tensor():
    _, _, spec = setup("resnet20")
    classes = color_groups(spec)
    assert sorted(g for c in classes for g in c) == sorted(spec.sizes)
    conflicts = spec.conflicts()
    for c in classes:
        assert all(not (conflicts[g] & set(c)) for g in c)
    assert len(classes) < len(spec.sizes)


def test_bad_pairs_raise_clear_errors():
    model, _, spec = setup("mlp")
    state = model.state_dict()
    with pytest.raises(SpecError, match="does not know"):
        match(spec, [({"nope": torch.zeros(1)}, {"nope": torch.zeros(1)})])
    with pytest.raises(SpecError, match="has shape"):
        bad = {**state, "layers.0.weight": torch.zeros(3, 3)}
        match(spec, [(bad, bad)])
    with pytest.raises(SpecError, match="different tensors"):
        match(spec, [(state, {k: v for k, v in state.items() if k != "head.bias"})])
    with pytest.raises(SpecError, match="no pairs"):
        match(spec, [])
    nan = {**state, "head.weight": torch.full_like(state["head.weight"], float("nan"))}
    with pytest.raises(FloatingPointError, match="head.weight"):
        match(spec, [(nan, state)])


@pytest.mark.parametrize("threads", [2, 4])
def test_cost_matrices_are_bit_identical_whatever_the_thread_count(threads):
    """A Ray worker holding one CPU and this process with many must feed the LAPs the same bits, or
    tied units are assigned differently (MKL splits long float32 sums over its threads)."""
    g = torch.Generator().manual_seed(0)
    spec = PermutationSpec.from_axes({"w": ("a", "b")}, {"w": torch.zeros(96, 96)})
    pairs = [({"w": torch.randn(96, 96, generator=g)}, {"w": torch.randn(96, 96, generator=g)}) for _ in range(40)]
    perm = random_permutation(spec, g)
    before = torch.get_num_threads()
    costs = {}
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            bank = PairBank(spec)
            for t, s in pairs:
                bank.add(t, s)
            costs[n] = bank.cost("a", perm)  # its term sums over 40 pairs x 96 units: 3840 products
    finally:
        torch.set_num_threads(before)
    assert torch.equal(costs[1], costs[threads])
