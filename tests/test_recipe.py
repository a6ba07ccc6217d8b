"""Sweeping the subsequent training with the transfer, and the ``raytraj ensemble --recipe`` presets."""

import json

import pytest
import ray

from raytraj import cli
from raytraj.config import ConfigError
from raytraj.transfer import TransferConfig
from raytraj.tune import parse_params, run_sweep
from raytraj.recipes import ENSEMBLE_RECIPES


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_sweep_over_finetune_epochs_ranks_by_what_the_trial_hands_over(cluster, digits_source, tmp_path):
    out = tmp_path / "sweep"
    rows = run_sweep(str(digits_source / "source"), str(out), parse_params(["finetune_epochs=0,2"]),
                     base=TransferConfig(steps=3), target={"target_seed": 1000}, finetune_lr=0.01)
    assert sorted(r["finetune_epochs"] for r in rows) == [0, 2]
    by_epochs = {r["finetune_epochs"]: r for r in rows}
    tuned, plain = by_epochs[2], by_epochs[0]
    assert tuned["member_val_acc"] == tuned["finetune_val_acc"] is not None
    assert plain["member_val_acc"] == plain["best_val_acc"] and plain["finetune_val_acc"] is None
    assert rows[0]["member_val_acc"] >= rows[1]["member_val_acc"]
    assert all(r["cpu_s"] > 0 for r in rows)
    trials = out / "trials"
    assert (trials / tuned["trial_id"] / "finetune" / "trajectory.json").exists()
    assert not (trials / plain["trial_id"] / "finetune").exists()
    recipe = json.loads((trials / tuned["trial_id"] / "finetune" / "trajectory.json").read_text())["meta"]["recipe"]
    assert recipe["epochs"] == 2 and recipe["lr"] == 0.01  # the fixed finetune_lr reached the trial
    assert json.loads((out / "best.json").read_text())["member_val_acc"] == rows[0]["member_val_acc"]


def test_finetune_settings_are_checked_before_ray(tmp_path, digits_source):
    with pytest.raises(ConfigError, match="finetune_epochs must be >= 0"):
        parse_params(["finetune_epochs=1,-1"])
    with pytest.raises(ConfigError, match="finetune_lr"):
        parse_params(["finetune_lr=0"])
    from raytraj.tune import run_ensemble

    with pytest.raises(ConfigError, match="finetune_lr"):
        run_ensemble(str(digits_source / "source"), str(tmp_path / "e"), members=2, cfg=TransferConfig(steps=3),
                     finetune_epochs=1, finetune_lr=-0.1)
    with pytest.raises(ConfigError, match="asha"):
        run_sweep(str(digits_source / "source"), str(tmp_path / "s"), parse_params(["finetune_epochs=1,2"]),
                  base=TransferConfig(steps=3), target={"target_seed": 1000}, scheduler="asha")


@pytest.mark.slow
def test_recipe_sets_what_the_command_line_leaves_open(cluster, digits_source, tmp_path, capsys):
    fast = ENSEMBLE_RECIPES["fast"].options()
    out = tmp_path / "ens"
    argv = ["ensemble", "--source", str(digits_source / "source"), "--out", str(out), "--members", "2",
            "--recipe", "fast", "--steps", "3", "--finetune-lr=0.01"]
    assert cli.main(argv) == 0
    members = [out / "members" / f"member-{k:03d}" for k in range(2)]
    for m in members:
        config = json.loads((m / "config.json").read_text())["transfer"]
        assert config["steps"] == 3  # given: overrides the preset
        assert config["grad_batches"] == fast["grad_batches"] and config["val_subset"] == fast["val_subset"]
        recipe = json.loads((m / "finetune" / "trajectory.json").read_text())["meta"]["recipe"]
        assert recipe["epochs"] == fast["finetune_epochs"] and recipe["lr"] == 0.01
    saved = json.loads((out / "ensemble.json").read_text())
    assert saved["finetune_epochs"] == fast["finetune_epochs"]
    assert saved["timing"]["trial_cpu_s_sum"] > 0 and all(m["cpu_s"] > 0 for m in saved["members"])


def test_an_unknown_recipe_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["ensemble", "--source", "s", "--out", "o", "--members", "2", "--recipe", "slow"])
    assert e.value.code == 2 and "invalid choice: 'slow'" in capsys.readouterr().err


def test_a_recipe_with_unknown_or_bad_settings_fails_when_defined():
    from raytraj.recipes import EnsembleRecipe

    with pytest.raises(ConfigError, match="stepz"):
        EnsembleRecipe(transfer={"stepz": 3})
    with pytest.raises(ConfigError, match="finetune_epochs"):
        EnsembleRecipe(finetune_epochs=-2)
