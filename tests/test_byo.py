"""Bring your own model, data and training loop: a network that is not in the zoo, trained by a
plain PyTorch loop in a package outside the repository, recorded, then transferred from the CLI
and from the Python API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import raytraj
from raytraj.checkpoint import load_checkpoint
from raytraj.cli import main
from raytraj.models import FactoryConfig, model_from_dict
from raytraj.perm import perm_from_lists
from raytraj.trajectory import TrajectoryStore
from userpkg import importable, write_user_package

STEPS = 8
RAYTRAJ = str(Path(sys.executable).parent / "raytraj")


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = write_user_package(tmp_path_factory.mktemp("outside"))
    importable(root)
    return root


@pytest.fixture(scope="module")
def source(pkg):
    from byo_userpkg.train import main as train_main

    train_main(str(pkg / "src"), seed=1)
    return str(pkg / "src")


@pytest.fixture(scope="module")
def cli_runs(pkg, source):
    """FGMT through the installed `raytraj` script, run from the user's folder (no PYTHONPATH), and Naive."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = {}
    for method in ("fgmt", "naive"):
        r = subprocess.run([RAYTRAJ, "transfer", "--source", source, "--target-seed", "5", "--method", method,
                            "--steps", str(STEPS), "--out", f"run-{method}", "--quiet"],
                           cwd=pkg, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out[method] = pkg / f"run-{method}"
    return out


def test_store_records_the_factory_and_round_trips(source):
    store = TrajectoryStore(source)
    cfg = model_from_dict(store.meta["model"])
    assert cfg == FactoryConfig("byo_userpkg.nets:make_net", {"width": 64})
    assert raytraj.build_model(cfg, 1).state_dict().keys() == store.read(0).keys()


def test_fgmt_beats_naive_on_a_user_model(cli_runs):
    fgmt = json.loads((cli_runs["fgmt"] / "metrics.json").read_text())
    naive = json.loads((cli_runs["naive"] / "metrics.json").read_text())
    assert fgmt["steps"] == naive["steps"] == STEPS
    assert fgmt["test_acc"] > naive["test_acc"] + 8, (fgmt["test_acc"], naive["test_acc"])
    assert fgmt["test_acc"] > 80


def test_python_api_gives_the_cli_result(pkg, source, cli_runs, tmp_path):
    from byo_userpkg.data import load
    from byo_userpkg.nets import make_net

    torch.manual_seed(5)  # the init the CLI's --target-seed 5 makes
    target = make_net(width=64)
    result = raytraj.transfer_model(source=source, target=target, data=load(),
                                    config=raytraj.TransferConfig(method="fgmt", steps=STEPS), backend="local")
    cli = json.loads((cli_runs["fgmt"] / "metrics.json").read_text())
    assert result.metrics["val_acc"] == cli["val_acc"]
    assert result.metrics["test_acc"] == cli["test_acc"]
    perm = perm_from_lists(json.loads((cli_runs["fgmt"] / "perm.json").read_text())["best"])
    assert all(torch.equal(result.perm[g], perm[g]) for g in perm)
    best, _ = load_checkpoint(str(cli_runs["fgmt"] / "best.safetensors"))
    assert all(torch.equal(result.model.state_dict()[k], v) for k, v in best.items())
    assert isinstance(result.model, type(target)) and result.out is None
    # With out=, the same run folder as the CLI's.
    out = tmp_path / "api-run"
    again = raytraj.transfer_model(source=source, target_seed=5,
                                   config=raytraj.TransferConfig(method="fgmt", steps=STEPS), out=str(out))
    assert again.metrics["test_acc"] == cli["test_acc"]
    # the same files, but the CLI's own log of what it printed
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cli_runs["fgmt"].iterdir()
                                                           if p.name != "log.txt")


def test_spec_override_is_used_and_checked(pkg, source, cli_runs, tmp_path, capsys):
    # A spec that permutes nothing: FGMT can then only follow the trajectory as Naive does, so it is
    # refused unless forced.
    out = tmp_path / "noperm"
    args = ["transfer", "--source", source, "--target-seed", "5", "--method", "fgmt", "--steps", str(STEPS),
            "--spec", "byo_userpkg.specs:no_perm", "--out", str(out), "--quiet"]
    assert main(args) == 2 and "FGMT would equal Naive" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    naive = json.loads((cli_runs["naive"] / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["val_acc"] == naive["val_acc"]
    assert json.loads((out / "config.json").read_text())["spec"] == "byo_userpkg.specs:no_perm"


@pytest.mark.parametrize("extra, message", [
    (["--model", "nope_pkg.nets:make_net"], "cannot import nope_pkg"),
    (["--model", "byo_userpkg.nets:nothing"], "has no attribute 'nothing'"),
    (["--model", "byo_userpkg.nets:broken"], "raised RuntimeError: out of coffee"),
    (["--model", "byo_userpkg.nets:make_net", "--model-arg", "width=32"], "does not match the store"),
    (["--data", "byo_userpkg.data:flat"], "cannot take the data's inputs"),
    (["--data", "byo_userpkg.data:negative_labels"], "labels must be class indices"),
    (["--data", "byo_userpkg.data:not_a_mapping"], "must return a mapping"),
    (["--data", "byo_userpkg.data:load", "--data-arg", "classes=3"], None),  # 3 classes: fits, but see below
    (["--spec", "byo_userpkg.specs:wrong"], "fails check_spec"),
    (["--model-arg", "width=32"], "--model-arg goes with --model"),
])
def test_bad_input_is_one_line_and_writes_nothing(pkg, source, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code = main(["transfer", "--source", source, "--target-seed", "5", "--method", "naive", "--steps", "2",
                 "--out", str(out), "--quiet", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    if message is None:  # a subset of the classes is valid data for a 10-class model
        assert code == 0
        return
    assert code == 2 and err[-1].startswith("raytraj transfer: error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert not out.exists()


def test_train_finetune_and_eval_by_import_path(pkg, cli_runs, tmp_path, capsys):
    store = tmp_path / "trained"
    assert main(["train", "--model", "byo_userpkg.nets:make_net", "--model-arg", "width=32",
                 "--data", "byo_userpkg.data:load", "--data-arg", "n=600", "--epochs", "2", "--seed", "3",
                 "--out", str(store), "--quiet"]) == 0
    meta = TrajectoryStore(str(store)).meta
    assert meta["model"] == {"name": "factory", "factory": "byo_userpkg.nets:make_net", "kwargs": {"width": 32}}
    assert meta["data"]["path"] == "byo_userpkg.data:load" and meta["data"]["args"] == {"n": 600}
    capsys.readouterr()
    assert main(["eval", str(store), "--split", "val"]) == 0
    assert "val accuracy" in capsys.readouterr().out
    # A model whose class count the data exceeds is refused before anything is written.
    assert main(["train", "--model", "byo_userpkg.nets:make_net", "--model-arg", "num_classes=5",
                 "--data", "byo_userpkg.data:load", "--epochs", "1", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "outputs 5 classes" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    ft = tmp_path / "ft"
    assert main(["finetune", "--from", str(cli_runs["fgmt"]), "--epochs", "1", "--lr", "0.01", "--out", str(ft),
                 "--quiet"]) == 0
    ft_store = TrajectoryStore(str(ft))
    assert ft_store.complete and ft_store.meta["model"]["factory"] == "byo_userpkg.nets:make_net"
    best, _ = load_checkpoint(str(cli_runs["fgmt"] / "best.safetensors"))
    assert all(torch.equal(ft_store.read(0)[k], v) for k, v in best.items())
