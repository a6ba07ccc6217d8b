"""Bad inputs that gave a traceback, were silently accepted, or got a misleading line: each now
ends in one true line and exit 2. Also --version, info, log.txt and --threads."""

import errno
import json
import shutil

import pytest
import torch

from raytraj.cli import _os_error, main
from raytraj.trajectory import TrajectoryStore

TRAIN = ["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--model-arg", "hidden=[16]", "--quiet"]


def one_line(capsys, command) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"raytraj {command}: error: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def src(digits_source):
    return str(digits_source / "source")


@pytest.mark.parametrize("argv, says", [
    (["--cpus-per-trial", "0"], "--cpus-per-trial must be a finite number > 0, got 0.0"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number > 0"),
    (["--max-concurrent", "0"], "--max-concurrent must be a whole number >= 1, got 0"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial must be a finite number >= 0"),
])
def test_tune_resources_are_checked_before_ray_starts(src, tmp_path, capsys, argv, says):
    out = tmp_path / "ens"
    assert main(["ensemble", "--source", src, "--members", "2", "--out", str(out), *argv]) == 2
    assert says in one_line(capsys, "ensemble")
    assert not out.exists()
    assert main(["sweep", "--source", src, "--param", "steps=2,3", "--out", str(out), *argv]) == 2
    assert says in one_line(capsys, "sweep")


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5"])
def test_placement_timeout_must_be_a_positive_number(src, tmp_path, capsys, value):
    assert main(["transfer", "--source", src, "--target-seed", "5", "--method", "naive", "--backend", "ray",
                 "--placement-timeout", value, "--out", str(tmp_path / "r")]) == 2
    assert "(--placement-timeout) must be a finite number > 0" in one_line(capsys, "transfer")


@pytest.mark.parametrize("seed", ["100000000000000000000", "-1"])
def test_seeds_out_of_range(tmp_path, capsys, src, seed):
    assert main([*TRAIN, "--seed", seed, "--out", str(tmp_path / "s")]) == 2
    assert "--seed must be a whole number >= 0 and <= 9223372036854775807" in one_line(capsys, "train")
    assert main(["transfer", "--source", src, "--target-seed", seed, "--method", "naive", "--steps", "2",
                 "--out", str(tmp_path / "r")]) == 2
    assert "seed must be a whole number" in one_line(capsys, "transfer")


@pytest.mark.parametrize("steps, says", [([0, 2, 1, 3], "lists its steps out of order ([0, 2, 1, 3])"),
                                         ([0, 1, 1, 2, 3], "lists steps [1] more than once")])
def test_manifest_steps_out_of_order_or_twice(src, tmp_path, capsys, steps, says):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    m = json.loads((bad / "trajectory.json").read_text())
    by_step = {s["step"]: s for s in m["steps"]}
    m["steps"] = [by_step[s] for s in steps]
    (bad / "trajectory.json").write_text(json.dumps(m))
    assert main(["transfer", "--source", str(bad), "--target-seed", "5", "--method", "naive",
                 "--out", str(tmp_path / "r")]) == 2
    err = one_line(capsys, "transfer")
    assert says in err and "missing steps []" not in err


def test_an_unreadable_input_is_not_blamed_on_out():
    e = PermissionError(errno.EACCES, "Permission denied", "/data/src/trajectory.json")
    assert "fix its permissions" in _os_error(e, "/runs/x") and "--out" not in _os_error(e, "/runs/x")
    assert "fix its permissions" in _os_error(e, None)  # eval has no --out
    assert "choose an --out you may write to" in _os_error(PermissionError(errno.EACCES, "Permission denied",
                                                                           "/runs/x/metrics.json"), "/runs/x")
    pyarrow_style = OSError("Failed to open local file '/data/src/steps/000001.arrow'. Detail: [errno 13] "
                            "Permission denied")
    assert "fix its permissions" in _os_error(pyarrow_style, "/runs/x")


def test_an_unreadable_step_file_is_not_called_corrupt(src, tmp_path, capsys, monkeypatch):
    import raytraj.trajectory.store as store_module

    real_resolve = store_module.fs.resolve

    class Denied:
        def __init__(self, inner):
            self.inner = inner

        def open_input_file(self, path):
            raise PermissionError(errno.EACCES, "Permission denied", path)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    def resolve(location):  # root reads through file modes here, so the refusal is staged
        fs_, path = real_resolve(location)
        return (Denied(fs_), path) if location.endswith(".arrow") else (fs_, path)

    monkeypatch.setattr(store_module.fs, "resolve", resolve)
    assert main(["eval", src]) == 2
    err = one_line(capsys, "eval")
    assert "permission denied" in err and "corrupt" not in err and "re-record" not in err, err


def test_raytraj_cache_pointing_at_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("RAYTRAJ_CACHE", str(tmp_path / "cachefile"))
    assert main([*TRAIN[:4], "mnist1d:200", *TRAIN[5:], "--out", str(tmp_path / "s")]) == 2
    err = one_line(capsys, "train")
    assert "RAYTRAJ_CACHE" in err and "is a file, not a folder" in err and "--out" not in err


def test_finetune_from_a_store_or_an_unfinished_run(src, tmp_path, capsys):
    assert main(["finetune", "--from", src, "--epochs", "1", "--out", str(tmp_path / "ft")]) == 2
    assert f"raytraj train --init {src}[:STEP]" in one_line(capsys, "finetune")
    assert main(["finetune", "--from", str(tmp_path / "nothing"), "--epochs", "1", "--out",
                 str(tmp_path / "ft")]) == 2
    assert "is not a transfer run folder" in one_line(capsys, "finetune")
    assert not (tmp_path / "ft").exists()


def test_unknown_data_lists_the_valid_names(tmp_path, capsys):
    assert main([*TRAIN[:4], "nosuch", *TRAIN[5:], "--out", str(tmp_path / "s")]) == 2
    err = one_line(capsys, "train")
    assert "unknown data 'nosuch'" in err and "digits" in err and "mnist1d" in err and "package.module:function" in err


def test_a_store_named_like_store_colon_step(src, tmp_path, capsys):
    odd = tmp_path / "a:1"
    shutil.copytree(src, odd)
    assert main(["eval", str(odd)]) == 0  # the folder a:1, not step 1 of a
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "b:1")]) == 2
    assert "was read as STORE:STEP, step 1 of" in one_line(capsys, "eval")


def test_many_ensemble_members_check_fast_and_ctrl_c_claims_nothing(src, tmp_path, capsys, monkeypatch):
    import raytraj.transfer.problem as problem
    import raytraj.tune.runner as runner

    built = []
    real_initial_state = problem.initial_state
    monkeypatch.setattr(problem, "initial_state", lambda *a, **k: built.append(a[1]) or real_initial_state(*a, **k))

    def ctrl_c(*args, **kwargs):  # Ctrl-C while Ray starts, before anything is saved
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "connect", ctrl_c)
    out = tmp_path / "ens"
    assert main(["ensemble", "--source", src, "--members", "5000", "--out", str(out)]) == 130
    assert built == []  # 5000 seeds, none the source's own (1): no model built, step 0 read once
    err = capsys.readouterr().err
    assert err.strip() == "raytraj ensemble: interrupted; nothing was saved yet: run the same command again to start"
    assert not out.exists()
    from raytraj.config import ConfigError

    with pytest.raises(ConfigError, match="equals the init of the source"):  # its own seed is still caught
        problem.check_targets(src, [{"target_seed": 7}, {"target_seed": 1}])
    assert built == [1]


def test_version_info_log_and_threads(src, tmp_path, capsys):
    from raytraj import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"raytraj {__version__}"
    run = tmp_path / "run"
    assert main(["transfer", "--source", src, "--target-seed", "5", "--method", "naive", "--steps", "2", "--quiet",
                 "--out", str(run), "--threads", "1"]) == 0
    assert torch.get_num_threads() == 1
    printed = capsys.readouterr().out
    log = (run / "log.txt").read_text()
    assert "raytraj transfer --source" in log and printed.strip().splitlines()[-1] in log
    assert main(["info", str(run)]) == 0
    info = capsys.readouterr().out
    assert "transfer run, finished" in info and "method: naive" in info and "best: step" in info
    assert f"source store {TrajectoryStore(src).digest}" in info
    assert main(["info", src]) == 0
    info = capsys.readouterr().out
    assert "trajectory store, complete, 5 steps" in info and "model: mlp" in info and "data: digits" in info
    assert main(["info", str(tmp_path)]) == 2
    capsys.readouterr()
    assert main([*TRAIN, "--threads", "0", "--out", str(tmp_path / "s")]) == 2
    assert "--threads must be a whole number >= 1, got 0" in one_line(capsys, "train")


def test_default_threads_leave_busy_cpus_alone(monkeypatch):
    import os

    from raytraj.outfolder import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (6.4, 0, 0))
    assert default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0, 0))
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0, 0))
    assert default_threads() == 8


def test_sweep_best_is_a_table_row_and_ensemble_lines_show_the_trained_on_val(capsys):
    from types import SimpleNamespace

    from raytraj.tune.runner import TrialLines
    from raytraj.tune.sweep import format_best, format_results

    rows = [{"trial_id": "t1", "steps": 10, "best_val_acc": 91.5, "final_val_acc": 90.25, "cpu_s": 3.0,
             "steps_run": 10, "status": "finished"},
            {"trial_id": "t2", "steps": 20, "best_val_acc": 80.0, "final_val_acc": None, "cpu_s": 1.0,
             "steps_run": 5, "status": "stopped early"}]
    table = format_results(rows, ["steps"]).splitlines()
    assert format_best(rows, ["steps"]).splitlines() == ["best:", table[0], table[2]]
    assert "{" not in format_best(rows, ["steps"]) and "91.50" in table[2]

    lines = TrialLines("ensemble", 2)
    trial = SimpleNamespace(trial_id="m0", config={"member": 0}, status="TERMINATED",
                            last_result={"transfer_finished": True, "best_val_acc": 70.0, "best_step": 9,
                                         "finetune_val_acc": 88.25})
    lines.on_trial_complete(0, [trial], trial)
    out = capsys.readouterr().out
    assert "finished: val 88.25% after the training after the transfer (the transfer's best val 70.00% at step 9)" \
        in out, out
