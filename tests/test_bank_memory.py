"""The pair bank's footprint: slots allocated up front, half-precision storage within a tolerance."""

import torch

from raytraj.models import build_model, config_for_data
from raytraj.perm import PairBank, identity_permutation, infer_spec, random_permutation


def _spec_and_pairs(count, seed=0):
    model = build_model(config_for_data("mlp", (1, 8, 8), 10, hidden=(48, 32)), seed=0)
    spec = infer_spec(model, torch.randn(4, 1, 8, 8))
    g = torch.Generator().manual_seed(seed)
    pairs = [({k: torch.randn(s, generator=g) for k, s in spec.shapes.items()},
              {k: torch.randn(s, generator=g) for k, s in spec.shapes.items()}) for _ in range(count)]
    return spec, pairs


def _pair_bytes(spec, itemsize):
    return 2 * sum(torch.Size(s).numel() for s in spec.shapes.values()) * itemsize


def test_a_bank_told_its_count_allocates_exactly_that_and_grows_without_doubling():
    spec, pairs = _spec_and_pairs(33)
    exact = PairBank(spec, capacity=33)
    grown = PairBank(spec)
    for t, s in pairs:
        exact.add(t, s)
        grown.add(t, s)
    assert exact.memory_bytes()["pairs"] == 33 * _pair_bytes(spec, 4)
    assert grown.memory_bytes()["pairs"] < 1.3 * 33 * _pair_bytes(spec, 4)  # doubling held 64 slots for 33
    perm = random_permutation(spec, torch.Generator().manual_seed(1))
    for g in spec.sizes:
        assert torch.equal(exact.cost(g, perm), grown.cost(g, perm))


def test_a_bf16_bank_halves_the_pairs_and_keeps_the_cost_matrices_close():
    spec, pairs = _spec_and_pairs(6)
    full, half = PairBank(spec, capacity=6), PairBank(spec, capacity=6, dtype=torch.bfloat16)
    for t, s in pairs:
        full.add(t, s)
        half.add(t, s)
    assert half.memory_bytes()["pairs"] * 2 == full.memory_bytes()["pairs"]
    for perm in (identity_permutation(spec), random_permutation(spec, torch.Generator().manual_seed(2))):
        for g in spec.sizes:
            a, b = full.cost(g, perm), half.cost(g, perm)
            assert b.dtype == torch.float64
            assert float((a - b).norm() / a.norm()) < 1e-2  # bf16 keeps 8 bits: ~0.4% per value, averaging out
    # incremental refreshes (a few units moved) agree with a bank that recomputes from scratch, to
    # float32 rounding: the differences are upcast before they are taken
    perm = identity_permutation(spec)
    g = next(iter(spec.sizes))
    half.cost(g, perm)
    moved = {k: p.clone() for k, p in perm.items()}
    for k in moved:
        moved[k][[0, 1]] = moved[k][[1, 0]]
    fresh = PairBank(spec, capacity=6, dtype=torch.bfloat16)
    for t, s in pairs:
        fresh.add(t, s)
    for g in spec.sizes:
        a, b = half.cost(g, moved), fresh.cost(g, moved)
        assert float((a - b).norm() / b.norm()) < 1e-5
