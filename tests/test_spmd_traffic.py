"""What the driver of the SPMD Ray backend receives per step: a small record, not the permutation.

Rank 0 writes each step's permutation to the run folder (state/perms); the driver keeps a
``HeldPermutation`` that names the file, its checkpoint names it too, and only the final result reads
it. The fast tests check the held permutation and its checkpoint round trip without Ray; one Ray test
checks that the driver's bytes per step do not grow with the model's width.
"""

import json

import pytest
import torch

from raytraj.config import ConfigError
from raytraj.perm import identity_permutation
from raytraj.transfer.checkpointing import RunCheckpointer
from raytraj.transfer.held import HeldPermutation, perm_path, write_perm
from raytraj.transfer.state import TransferState

SIZES = {"P_0": 5, "P_1": 3}


def _perm(seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randperm(n, generator=g) for k, n in SIZES.items()}


def test_a_held_permutation_reads_its_file_once_and_in_the_spec_order(tmp_path):
    perm = _perm(0)
    write_perm(str(tmp_path), 3, perm)
    held = HeldPermutation(str(tmp_path), 3, SIZES)
    assert not held.loaded and list(held) == list(SIZES) and len(held) == 2  # the groups need no read
    assert all(torch.equal(held[g], perm[g]) and held[g].dtype == torch.long for g in SIZES)
    assert held.loaded and held.record == {"held": 3}


def test_a_damaged_held_permutation_is_refused_naming_its_file(tmp_path):
    write_perm(str(tmp_path), 1, {"P_0": torch.tensor([0, 0, 1, 2, 3]), "P_1": torch.arange(3)})
    with pytest.raises(ConfigError, match=r"perm-000001.*step 1.*not a permutation"):
        HeldPermutation(str(tmp_path), 1, SIZES)["P_0"]


def test_the_checkpoint_names_held_permutations_and_reads_them_back(tmp_path):
    loc = str(tmp_path / "state")
    perms = [identity_permutation(type("S", (), {"sizes": SIZES})()), _perm(1), _perm(2)]
    for s in (1, 2):
        write_perm(loc, s, perms[s])
    state = TransferState(step=2, perms=[perms[0], HeldPermutation(loc, 1, SIZES), HeldPermutation(loc, 2, SIZES)])
    ckpt = RunCheckpointer(loc, sizes=SIZES)
    ckpt.save(state, [], {})
    tail = ckpt._tail(state)["perms"]
    assert tail[1:] == [{"held": 1}, {"held": 2}]  # named, not copied: O(1) per step in the progress file
    loaded, _, _ = RunCheckpointer(loc, sizes=SIZES).load()
    assert isinstance(loaded.perms[2], HeldPermutation) and not loaded.perms[2].loaded
    assert all(torch.equal(loaded.perms[s][g], perms[s][g]) for s in range(3) for g in SIZES)
    assert perm_path(loc, 2).endswith("perm-000002.safetensors")


@pytest.mark.slow
def test_the_driver_bytes_per_step_stay_below_the_permutation(tmp_path_factory):
    """Metered bytes per step (command + answer + evaluation) at width 256: the permutation's changes
    alone (8 bytes per moved unit, hundreds of units move early on) would exceed the bound; it stays
    in the run folder, and the final result still has it all. One rank: the answer's size does not
    depend on the world size, and one actor starts fastest."""
    import ray

    from raytraj.ray_config import RayConfig
    from raytraj.train import train_from_args
    from raytraj.transfer import TransferConfig, transfer

    root = tmp_path_factory.mktemp("width")
    src, out = str(root / "src"), root / "run"
    train_from_args("mlp", "digits", src, seed=1, epochs=1, model_args={"hidden": [256, 256]}, progress=False)
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        m = transfer(src, str(out), TransferConfig(method="fgmt", steps=3, seed=0), target_seed=2, backend="ray",
                     ray_config=RayConfig(workers=1), progress=False, force=True)
    finally:
        ray.shutdown()
    per_step = m["traffic"]["driver_bytes"][1:]  # after the first step's start-up
    assert max(per_step) < 1_000, per_step
    final = json.loads((out / "perm.json").read_text())["final"]
    assert sorted(len(p) for p in final.values()) == [256, 256]
    assert any(p != sorted(p) for p in final.values())  # units moved, yet no change crossed the driver


@pytest.mark.parametrize("requests,count,world", [(1, 1, 2), (1, 3, 2), (2, 3, 3), (3, 1, 4), (1, 1, 3)])
def test_a_pair_is_two_units_so_one_batch_keeps_two_ranks_busy(requests, count, world):
    from raytraj.transfer.sharding import SOURCE, TARGET, split_side_units

    runs = split_side_units(requests, count, world)
    units = [(r, side, b) for k in range(world) for (r, side), bs in runs[k].items() for b in bs]
    assert sorted(units) == sorted((r, s, b) for r in range(requests) for s in (TARGET, SOURCE) for b in range(count))
    sizes = [sum(len(bs) for bs in run.values()) for run in runs]
    assert max(sizes) - min(sizes) <= 1  # even, whatever the world size
    busy = sum(1 for size in sizes if size)
    assert busy == min(world, 2 * requests * count)
