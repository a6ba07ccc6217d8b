"""Sharding a pair bank by tensor (pure, no Ray): the shard plan, and shards whose summed cost
terms and LAP answers equal one unsharded PairBank's bit for bit, also after a checkpoint is read
back by another number of workers."""

import numpy as np
import pytest
import torch

from raytraj.models import build_model, config_for_data
from raytraj.perm import PairBank, infer_spec, random_permutation
from raytraj.perm.matching import sum_terms
from raytraj.transfer.bank_shard import BankShard, apply_diff, perm_diff, read_shards, shard_record
from raytraj.transfer.sharding import plan_shards, split_units


@pytest.fixture(scope="module")
def resnet():
    model = build_model(config_for_data("resnet20", (3, 16, 16), 10, width=0.25), 0)
    spec = infer_spec(model, torch.randn(2, 3, 16, 16))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return spec, shapes


def random_pair(shapes, gen):
    return tuple({k: torch.randn(s, generator=gen) for k, s in shapes.items()} for _ in range(2))


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_the_plan_gives_each_tensor_one_owner_in_layer_runs(resnet, workers):
    spec, shapes = resnet
    plan = plan_shards(spec, shapes, workers)
    owners = [plan.owner[n] for n in shapes]
    assert owners == sorted(owners)  # contiguous runs of layers
    assert set(owners) == set(range(workers))  # nobody idle: this model has enough tensors
    for g in spec.sizes:
        assert plan.solver[g] in plan.contributors[g]
        assert set(plan.contributors[g]) == {plan.owner[n] for n, _ in spec.groups[g] if n in plan.owner}
    if workers == 1:
        assert set(plan.solver.values()) == {0}


def test_units_are_split_once_each_in_order():
    runs = split_units(3, 4, 5)
    flat = [(r, b) for run in runs for r, bs in run.items() for b in bs]
    assert flat == [(r, b) for r in range(3) for b in range(4)]
    assert max(sum(len(b) for b in run.values()) for run in runs) == 3  # 12 units over 5 workers


def solve_sharded(spec, shards, plan, group):
    """What the Ray backend does for one group: every shard's parts, reduced on the group's solver."""
    parts = [s.parts([group])[0] for s in shards]
    return shards[plan.solver[group]].solve(group, parts)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_shards_sum_to_the_unsharded_cost_bit_for_bit(resnet, workers):
    spec, shapes = resnet
    plan = plan_shards(spec, shapes, workers)
    gen = torch.Generator().manual_seed(0)
    bank = PairBank(spec)
    shards = [BankShard(spec, plan.owned(w), normalize=False) for w in range(workers)]
    perm = {g: p.clone() for g, p in random_permutation(spec, gen).items()}
    for step in range(3):
        target, source = random_pair(shapes, gen)
        bank.add(target, source)
        for s in shards:
            s.add(target, source)
            s.sync(perm_diff({g: s.perm[g].numpy() for g in perm}, {g: p.numpy() for g, p in perm.items()}))
        for g in spec.sizes:
            whole = bank.cost(g, perm)
            terms = sorted(t for s in shards for t in s.bank.cost_terms(g, s.perm))
            assert [i for i, _ in terms] == [i for i, _ in bank.cost_terms(g, perm)]  # each term once
            assert torch.equal(sum_terms(spec.sizes[g], [c for _, c in terms]), whole)
            diff, value_new, value_old, _ = solve_sharded(spec, shards, plan, g)
            a = whole.double().numpy()
            rows = np.arange(len(a))
            p_new = perm[g].numpy().copy()
            apply_diff({g: p_new}, diff)
            assert value_new == float(a[rows, p_new].sum()) and value_old == float(a[rows, perm[g].numpy()].sum())
        # a few units move: the incremental cache path
        for g in list(perm)[step::2]:
            perm[g] = perm[g].clone()
            perm[g][[0, 1]] = perm[g][[1, 0]]
    for s in shards:
        s.sync(perm_diff({g: s.perm[g].numpy() for g in perm}, {g: p.numpy() for g, p in perm.items()}))
    total = sum(s.objective() for s in shards)
    assert total == pytest.approx(bank.permuted_objective(perm), rel=1e-12)
    assert sum(s.constant() for s in shards) + total == pytest.approx(bank.objective(perm), rel=1e-12)


def test_a_checkpoint_restores_into_another_number_of_shards(resnet, tmp_path):
    spec, shapes = resnet
    gen = torch.Generator().manual_seed(1)
    perm = random_permutation(spec, gen)
    three = plan_shards(spec, shapes, 3)
    shards = [BankShard(spec, three.owned(w), normalize=False) for w in range(3)]
    bank = PairBank(spec)
    for step in (1, 2):
        target, source = random_pair(shapes, gen)
        bank.add(target, source)
        for w, s in enumerate(shards):
            s.add(target, source)
            s.sync(perm_diff({g: s.perm[g].numpy() for g in perm}, {g: p.numpy() for g, p in perm.items()}))
            for g in spec.sizes:
                s.bank.cost_terms(g, s.perm)  # fill the caches, as a solve does
            s.save(str(tmp_path), w, step, target, source)
        for g in spec.sizes:
            bank.cost(g, perm)
    record = shard_record(str(tmp_path), [[1, 3], [2, 3]], 2, 3)
    two = plan_shards(spec, shapes, 2)
    restored = [BankShard(spec, two.owned(w), normalize=False) for w in range(2)]
    for s in restored:
        s.restore(record)
        s.sync(perm_diff({g: s.perm[g].numpy() for g in perm}, {g: p.numpy() for g, p in perm.items()}))
    for g in spec.sizes:
        terms = sorted(t for s in restored for t in s.bank.cost_terms(g, s.perm))
        assert torch.equal(sum_terms(spec.sizes[g], [c for _, c in terms]), bank.cost(g, perm))
    # the local backend reads the same record whole (a Ray run resumed locally)
    pairs, cache = read_shards(record)
    assert len(pairs) == 2 and set(pairs[0][0]) == set(shapes) and cache
