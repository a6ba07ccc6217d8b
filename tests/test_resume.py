"""Resuming and restarting: resolved paths, runs that stopped before their first step, run folders
that are not what --out expects, and progress files whose size does not grow with T."""

import json
import os

import pytest
import torch

import raytraj.transfer.checkpointing as checkpointing
from raytraj.checkpoint import load_checkpoint
from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.data import load_data
from raytraj.models import config_for_data
from raytraj.train import TrainConfig, train
from raytraj.transfer import TransferConfig, transfer


def test_resume_accepts_the_source_spelled_relative_or_absolute(digits_source, tmp_path, monkeypatch,
                                                                cut_transfer_at):
    monkeypatch.chdir(digits_source)
    cfg = TransferConfig(method="naive", steps=6, eval_every=0)
    lift = cut_transfer_at(3)
    with pytest.raises(KeyboardInterrupt):
        transfer("source", str(tmp_path / "run"), cfg, target_seed=4, progress=False)
    lift()
    m = transfer(str(digits_source / "source"), str(tmp_path / "run"), cfg, target_seed=4, resume=True,
                 progress=False)
    assert m["steps"] == 6 and m["source"] == str(digits_source / "source")


def test_a_transfer_that_failed_before_its_first_step_does_not_block_the_retry(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")
    argv = ["transfer", "--source", src, "--method", "naive", "--steps", "2", "--out", str(tmp_path / "run"),
            "--quiet"]
    assert main([*argv, "--target-init", str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    assert main([*argv, "--target-seed", "4"]) == 0  # neither --resume nor "other settings" demanded
    assert json.loads((tmp_path / "run" / "config.json").read_text())["target_seed"] == 4


def test_a_training_run_that_failed_before_its_first_checkpoint_does_not_block_the_retry(tmp_path):
    data = load_data("digits")
    cfg = config_for_data("mlp", data.input_shape, data.num_classes, hidden=[16])
    out = str(tmp_path / "s")
    with pytest.raises(ConfigError, match="soft targets have shape"):
        train(cfg, data, TrainConfig(epochs=1), 0, out, soft_targets=torch.ones(3, 10), progress=False)
    r = train(cfg, data, TrainConfig(epochs=2), 0, out, progress=False)  # other settings: starts over
    assert r.steps == 2


def test_out_that_holds_the_other_kind_of_run_is_refused(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")
    before = sorted(os.listdir(src))
    assert main(["transfer", "--source", src, "--target-seed", "4", "--method", "naive", "--steps", "2",
                 "--out", src, "--quiet"]) == 2
    assert "is a trajectory store" in capsys.readouterr().err
    assert sorted(os.listdir(src)) == before  # nothing written into the store
    run = tmp_path / "run"
    assert main(["transfer", "--source", src, "--target-seed", "4", "--method", "naive", "--steps", "2",
                 "--out", str(run), "--quiet"]) == 0
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--out", str(run), "--quiet"]) == 2
    assert "holds a transfer run" in capsys.readouterr().err
    assert not (run / "trajectory.json").exists()


def test_progress_file_size_does_not_grow_with_the_number_of_steps(digits_source, tmp_path):
    src = str(digits_source / "source")
    sizes = {}
    for steps in (40, 600):
        out = tmp_path / f"t{steps}"
        transfer(src, str(out), TransferConfig(method="naive", steps=steps, eval_every=0), target_seed=4,
                 progress=False)
        sizes[steps] = (out / "state" / checkpointing.PROGRESS).stat().st_size
    # every permutation in the progress file: 15x the bytes for 15x the steps
    assert sizes[600] < 3 * sizes[40], sizes


def test_fgmt_resumed_across_chunk_files_equals_the_uninterrupted_run(digits_source, tmp_path, monkeypatch,
                                                                      cut_transfer_at):
    monkeypatch.setattr(checkpointing, "CHUNK", 2)
    src = str(digits_source / "source")
    cfg = TransferConfig(method="fgmt", steps=7, seed=3)
    whole = transfer(src, str(tmp_path / "whole"), cfg, target_seed=7, progress=False)
    lift = cut_transfer_at(5)
    with pytest.raises(KeyboardInterrupt):
        transfer(src, str(tmp_path / "cut"), cfg, target_seed=7, progress=False)
    assert len(list((tmp_path / "cut" / "state").glob("chunk-*.json"))) >= 2
    lift()
    resumed = transfer(src, str(tmp_path / "cut"), cfg, target_seed=7, resume=True, progress=False)
    assert resumed["val_acc"] == whole["val_acc"] and resumed["grad_batches"] == whole["grad_batches"]
    a = load_checkpoint(str(tmp_path / "whole" / "final.safetensors"))[0]
    b = load_checkpoint(str(tmp_path / "cut" / "final.safetensors"))[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "whole" / "perm.json").read_text()) == \
        json.loads((tmp_path / "cut" / "perm.json").read_text())
