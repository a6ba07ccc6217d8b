"""What a cheap transfer reports and offers: LAPs against the floor, the stopping rule, the LAP
solver, and evaluation on a val subset."""

import json
import warnings

import pytest

from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.data import load_data
from raytraj.perm import solve_laps_serial
from raytraj.transfer import TransferConfig, transfer
from raytraj.transfer.worker import val_subset_indices


def read_metrics(run):
    with open(run / "metrics.json") as f:
        return json.load(f)


def test_metrics_report_every_steps_solve_against_the_lap_floor(digits_source, tmp_path):
    transfer(str(digits_source / "source"), str(tmp_path / "run"), TransferConfig(steps=5, eval_every=0),
             target_seed=2, progress=False)
    solver = read_metrics(tmp_path / "run")["solver"]
    per = solver["per_step"]
    assert len(per["sweeps"]) == len(per["laps"]) == len(per["converged"]) == 5
    assert solver["laps"] == sum(per["laps"]) and solver["sweeps"] == sum(per["sweeps"])
    assert solver["lap_floor"] == 2 * 5  # MLP 64-64: two groups, one LAP each per step
    assert solver["laps_per_floor"] == pytest.approx(solver["laps"] / 10) and solver["laps_per_floor"] >= 1
    # each step converged, or was cut by step_sweeps (default 3) and went on in the next one
    assert all(c or cap for c, cap in zip(per["converged"], per["capped"])) and solver["unconverged_steps"] == []
    assert per["converged"][-1] and not per["capped"][-1]


def test_a_step_that_hits_max_sweeps_warns_and_is_recorded(digits_source, tmp_path):
    with pytest.warns(RuntimeWarning, match="max_sweeps=1"):
        transfer(str(digits_source / "source"), str(tmp_path / "run"),
                 TransferConfig(steps=3, eval_every=0, max_sweeps=1, rtol=0.0), target_seed=2, progress=False)
    solver = read_metrics(tmp_path / "run")["solver"]
    assert 1 in solver["unconverged_steps"]  # a cold first step needs more than one sweep
    assert solver["per_step"]["converged"][0] is False


def test_step_sweeps_caps_every_step_but_the_last_without_a_warning(digits_source, tmp_path):
    runs = {}
    for cap in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a capped step is not "unconverged"
            runs[cap] = transfer(str(digits_source / "source"), str(tmp_path / f"cap{cap}"),
                                 TransferConfig(steps=6, eval_every=0, step_sweeps=cap), target_seed=2,
                                 progress=False)["solver"]
    capped, free = runs[1], runs[0]
    assert capped["per_step"]["sweeps"][:-1] == [1] * 5
    assert capped["per_step"]["converged"][-1] is True  # the last step runs to the rule
    assert capped["unconverged_steps"] == [] and capped["capped_steps"] >= 1
    assert max(free["per_step"]["sweeps"][:-1]) > 1  # a cap that did not bind would test nothing
    assert capped["laps"] < free["laps"]
    with pytest.raises(ConfigError, match="step_sweeps must be >= 0"):
        TransferConfig(step_sweeps=-1)


def test_relative_rule_solves_fewer_laps_than_the_official_rule(digits_source, tmp_path):
    runs = {}
    for name, rtol in (("paper", 0.0), ("relative", 1e-2)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # both converge
            runs[name] = transfer(str(digits_source / "source"), str(tmp_path / name),
                                  TransferConfig(steps=6, eval_every=0, rtol=rtol), target_seed=2, progress=False)
    assert runs["relative"]["solver"]["laps"] < runs["paper"]["solver"]["laps"]


@pytest.mark.slow  # a transfer end to end
def test_the_auction_reaches_scipys_optimum_on_real_cost_matrices_and_runs_end_to_end(digits_source, tmp_path):
    import numpy as np
    import torch

    from raytraj.perm import PairBank, identity_permutation, random_permutation, solve_laps_auction
    from raytraj.transfer import prepare

    src = str(digits_source / "source")
    problem = prepare(src, TransferConfig(steps=4), target_seed=2)
    store_end = problem.trajectory.point(problem.num_steps)
    start = problem.trajectory.point(0)
    # Weight-matching costs of a trained MLP on digits: dead units and blank pixels make ties.
    bank = PairBank(problem.spec)
    bank.add({k: store_end[k] - start[k] for k in problem.param_names},
             {k: problem.target_init[k] for k in problem.param_names})
    shuffled = random_permutation(problem.spec, torch.Generator().manual_seed(0))
    for perm in (identity_permutation(problem.spec), shuffled):
        costs = [bank.cost(g, perm) for g in problem.spec.sizes]
        for a, cols in zip(costs, solve_laps_auction(costs)):
            ref = solve_laps_serial([a.numpy()])[0]
            rows = np.arange(len(ref))
            assert a.numpy()[rows, cols.numpy()].sum() == pytest.approx(a.numpy()[rows, ref].sum(), rel=1e-9)
    with pytest.warns(RuntimeWarning, match="slower than scipy"):  # no GPU here: said, not refused
        m = transfer(src, str(tmp_path / "auction"), TransferConfig(steps=1, eval_every=0, lap="auction"),
                     target_seed=2, progress=False)
    assert m["solver"]["laps"] >= 2


def test_val_subset_is_seeded_and_the_full_set_when_large(digits_source, tmp_path):
    src = str(digits_source / "source")
    n_val = load_data("digits").size("val")
    full = transfer(src, str(tmp_path / "full"), TransferConfig(steps=6), target_seed=2, progress=False)
    whole = transfer(src, str(tmp_path / "whole"), TransferConfig(steps=6, val_subset=n_val), target_seed=2,
                     progress=False)
    assert whole["val_acc"] == full["val_acc"]
    size = n_val // 2
    sub = transfer(src, str(tmp_path / "sub"), TransferConfig(steps=6, val_subset=size), target_seed=2,
                   progress=False)
    for acc in sub["val_acc"]:
        assert acc * size / 100 == pytest.approx(round(acc * size / 100), abs=1e-3)  # a count out of `size`
    assert sub["val_acc"] != full["val_acc"]
    assert sub["best_step"] == full["best_step"]  # the best-step choice holds on this config
    idx = val_subset_indices(0, n_val, size)
    assert len(set(idx.tolist())) == size and list(idx) == sorted(idx)
    assert (idx == val_subset_indices(0, n_val, size)).all() and not (idx == val_subset_indices(1, n_val, size)).all()


def test_bad_solver_settings_are_refused():
    for bad, match in (({"rtol": -1.0}, "rtol"), ({"tol": float("nan")}, "tol"), ({"lap": "hungarian"}, "LAP"),
                       ({"val_subset": -5}, "val_subset")):
        with pytest.raises(ConfigError, match=match):
            TransferConfig(**bad)


def test_cli_flags_reach_the_config_and_bad_values_give_one_line(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")
    code = main(["transfer", "--source", src, "--target-seed", "2", "--method", "fgmt", "--steps", "2", "--quiet",
                 "--rtol", "0.05", "--lap", "scipy", "--val-subset", "50", "--out", str(tmp_path / "ok")])
    assert code == 0
    recorded = json.loads((tmp_path / "ok" / "config.json").read_text())["transfer"]
    assert (recorded["rtol"], recorded["lap"], recorded["val_subset"]) == (0.05, "scipy", 50)
    capsys.readouterr()
    code = main(["transfer", "--source", src, "--target-seed", "2", "--method", "fgmt", "--steps", "2", "--quiet",
                 "--rtol", "-1", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("raytraj transfer: error: rtol must be >= 0")


def test_the_default_schedule_evaluates_spread_steps_and_every_late_one(digits_source, tmp_path, capsys):
    from raytraj.transfer.config import AUTO_EVAL, eval_steps

    assert TransferConfig().eval_every == AUTO_EVAL
    assert eval_steps(10) == list(range(1, 11))  # short runs: every step
    assert eval_steps(30) == [3, 6, 9, 12, 15, 18, 21, 24, 26, 27, 28, 29, 30]
    assert len(eval_steps(1000)) == 29 and eval_steps(1000)[-20:] == list(range(981, 1001))
    m = transfer(str(digits_source / "source"), str(tmp_path / "auto"), TransferConfig(method="naive", steps=30),
                 target_seed=2, progress=False)
    assert [s for s, acc in enumerate(m["val_acc"], 1) if acc is not None] == eval_steps(30)
    argv = ["transfer", "--source", str(digits_source / "source"), "--target-seed", "2", "--method", "naive",
            "--steps", "3", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "cli"), "--eval-every", "auto"]) == 0
    assert read_metrics(tmp_path / "cli")["val_acc"] != [None, None, None]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*argv, str(tmp_path / "bad"), "--eval-every", "often"])
    assert e.value.code == 2 and "expected auto or an integer" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="eval_every must be >= 0"):
        TransferConfig(eval_every=-2)


def test_building_zoo_models_does_not_import_dynamo_and_sizes_them_alike():
    # Sizing a model on the meta device ran torch's random-init decompositions, whose first call imports
    # torch._dynamo: about a CPU second of every command's start-up. A fresh interpreter shows whether it is.
    import subprocess
    import sys

    code = ("import sys, torch\n"
            "from raytraj.models import build_model, config_for_data, check_fits_in_memory, MODELS, model_name\n"
            "for name, shape in (('conv', (1, 28, 28)), ('resnet20', (1, 28, 28)), ('mlp', (64,))):\n"
            "    cfg = config_for_data(name, shape, 10)\n"
            "    real = build_model(cfg, 0)\n"
            "    with torch.device('meta'):\n"
            "        from raytraj.models import _SkipRandomInit\n"
            "        with _SkipRandomInit():\n"
            "            shell = MODELS[model_name(cfg)][1](cfg)\n"
            "    assert [p.shape for p in shell.parameters()] == [p.shape for p in real.parameters()], name\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
