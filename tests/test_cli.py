"""The command line, end to end, as a user runs it."""

import argparse
import json
import subprocess
import sys

import pytest

from raytraj.cli import main


def run(*argv):
    assert main([str(a) for a in argv]) == 0


def test_train_transfer_eval_plot_finetune(tmp_path, capsys):
    src = tmp_path / "src"
    run("train", "--model", "mlp", "--data", "digits", "--epochs", 3, "--seed", 1, "--out", src,
        "--model-arg", "hidden=[48]", "--lr", 0.05, "--quiet")
    for method in ("naive", "fgmt"):
        run("transfer", "--source", src, "--target-seed", 2, "--method", method, "--steps", 4, "--schedule", "cosine",
            "--grad-batches", 1, "--batch-size", 64, "--seed", 0, "--out", tmp_path / method, "--quiet")
    metrics = json.loads((tmp_path / "fgmt" / "metrics.json").read_text())
    assert metrics["method"] == "fgmt" and len(metrics["val_acc"]) == 4
    assert {p.name for p in (tmp_path / "fgmt").iterdir()} >= {"metrics.json", "best.safetensors",
                                                              "final.safetensors", "perm.json", "config.json"}
    run("eval", tmp_path / "fgmt", "--split", "test")
    assert f"{metrics['test_acc']:.2f}%" in capsys.readouterr().out
    run("eval", f"{src}:0", "--split", "val")
    run("plot", tmp_path / "naive", tmp_path / "fgmt", src, "--out", tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    run("finetune", "--from", tmp_path / "fgmt", "--epochs", 2, "--out", tmp_path / "ft", "--quiet")
    ft = json.loads((tmp_path / "ft" / "trajectory.json").read_text())
    assert ft["meta"]["init"]["transfer_run"] == str(tmp_path / "fgmt") and len(ft["steps"]) == 3


def test_user_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["transfer", "--source", str(tmp_path / "none"), "--target-seed", "1", "--method", "fgmt",
                 "--steps", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a trajectory store" in err and "Traceback" not in err
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "t"),
                 "--model-arg", "depth=3"]) == 2
    assert "unknown model 'mlp' config keys ['depth']" in capsys.readouterr().err
    assert main(["transfer", "--source", "x", "--target-seed", "1", "--method", "fgmt", "--steps", "3",
                 "--out", "o", "--workers", "2"]) == 2
    assert "--workers needs --backend ray" in capsys.readouterr().err


def test_spec_command_checks_the_zoo(capsys):
    run("spec", "--data", "digits")
    out = capsys.readouterr().out
    assert "mlp on digits: spec checked" in out and "resnet20 on digits: spec checked, 12 groups" in out
    assert "conv1d: skipped" in out


def test_entry_point_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "raytraj", "--help"], capture_output=True, text=True, check=True)
    assert "quickstart" in out.stdout and "transfer" in out.stdout


@pytest.mark.parametrize("argv", [["transfer", "--source", "s", "--method", "fgmt", "--out", "o"]])
def test_missing_required_target_is_an_argparse_error(argv):
    with pytest.raises(SystemExit):
        main(argv)


def test_cli_defaults_and_choices_come_from_the_config_and_registries():
    import dataclasses

    from raytraj.cli import _base_transfer, _transfer_config, build_parser
    from raytraj.models import MODELS
    from raytraj.transfer.config import LAP_SOLVERS, METHODS, QUICK_STEPS, TransferConfig
    from raytraj.trajectory import SCHEDULES

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    def action(cmd, flag):
        return next(a for a in subs[cmd]._actions if flag in a.option_strings)

    assert tuple(action("transfer", "--method").choices) == METHODS
    assert tuple(action("ensemble", "--method").choices) == tuple(m for m in METHODS if m != "oracle")
    for cmd in ("transfer", "ensemble", "sweep"):
        assert tuple(action(cmd, "--schedule").choices) == (*SCHEDULES, "actual")
        assert tuple(action(cmd, "--lap").choices) == LAP_SOLVERS
    assert list(action("distill", "--student").choices) == list(MODELS)
    # A transfer given only --steps is TransferConfig's defaults, field for field.
    args = parser.parse_args(["transfer", "--source", "s", "--target-seed", "1", "--method", "gmt", "--steps", "7",
                              "--out", "o"])
    assert _transfer_config(args) == TransferConfig(method="gmt", steps=7)
    defaults = {f.name: f.default for f in dataclasses.fields(TransferConfig)}
    args = parser.parse_args(["ensemble", "--source", "s", "--members", "2", "--out", "o"])
    assert _base_transfer(args) == TransferConfig(**{**defaults, "steps": QUICK_STEPS})
    args = parser.parse_args(["sweep", "--source", "s", "--param", "steps=1,2", "--schedule", "actual", "--out", "o"])
    assert _base_transfer(args).steps is None
