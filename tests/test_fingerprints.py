"""Fingerprints: a transfer run records its source store's and target's identity, and --resume
refuses a changed source; a store records its data's, and a later command that loads other
data for the same reference refuses unless --data names it explicitly."""

import json
import sys
import textwrap

import pytest

from raytraj.cli import main
from raytraj.trajectory import TrajectoryStore

TRAIN = ["train", "--model", "mlp", "--epochs", "2", "--model-arg", "hidden=[16]", "--quiet"]


def test_resume_refuses_a_source_retrained_since_the_kill(tmp_path, capsys, cut_transfer_at):
    src, out = str(tmp_path / "src"), str(tmp_path / "run")
    assert main([*TRAIN, "--data", "digits", "--seed", "1", "--out", src]) == 0
    argv = ["transfer", "--source", src, "--target-seed", "5", "--method", "naive", "--steps", "6", "--quiet",
            "--out", out]
    lift = cut_transfer_at(3)
    assert main(argv) == 130
    lift()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["fingerprints"]
    assert recorded["source"]["digest"] == TrajectoryStore(src).digest and recorded["source"]["seed"] == 1
    assert recorded["target"]["seed"] == 5 and recorded["target"]["digest"]
    assert main([*TRAIN, "--data", "digits", "--seed", "7", "--out", src, "--overwrite"]) == 0  # the source changes
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was started on other inputs: the source changed" in err and "seed 1 -> 7" in err, err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_resume_with_another_method_names_the_setting(digits_source, tmp_path, capsys, cut_transfer_at):
    argv = ["transfer", "--source", str(digits_source / "source"), "--target-seed", "5", "--steps", "6", "--quiet",
            "--out", str(tmp_path / "run")]
    lift = cut_transfer_at(2)
    assert main([*argv, "--method", "naive"]) == 130
    lift()
    capsys.readouterr()
    assert main([*argv, "--method", "fgmt", "--resume"]) == 2
    assert "transfer.method 'naive' -> 'fgmt'" in capsys.readouterr().err


DRIFTING = '''
import itertools
import torch

_calls = itertools.count()


def load(n=200):
    """Breaks the data contract: each call returns other tensors (a counter stands for a changing file)."""
    shift = next(_calls)
    g = torch.Generator().manual_seed(0)
    def split(m):
        x = torch.randn(m, 8, generator=g) + shift
        return x, (x[:, 0] > shift).long()
    return {"train": split(n), "val": split(60), "test": split(60)}
'''


@pytest.fixture
def drifting_data(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "drift_data.py").write_text(textwrap.dedent(DRIFTING))
    monkeypatch.syspath_prepend(str(pkg))
    yield "drift_data:load"
    sys.modules.pop("drift_data", None)


def test_a_data_function_that_changes_between_calls_is_refused(drifting_data, tmp_path, capsys):
    src = str(tmp_path / "src")
    assert main([*TRAIN, "--data", drifting_data, "--lr", "0.1", "--out", src]) == 0
    assert TrajectoryStore(src).meta["data_fingerprint"]["shapes"]["train"] == [200, 8]
    capsys.readouterr()
    xfer = ["transfer", "--source", src, "--target-seed", "5", "--method", "naive", "--steps", "2", "--quiet",
            "--force"]
    assert main([*xfer, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "loaded now differs from what" in err and "same shapes, other values" in err and "--data" in err, err
    assert not (tmp_path / "run").exists()
    assert main(["eval", src]) == 2 and "differs" in capsys.readouterr().err
    # named explicitly, other data is the user's choice
    assert main([*xfer, "--out", str(tmp_path / "run"), "--data", drifting_data]) == 0
    assert main(["finetune", "--from", str(tmp_path / "run"), "--epochs", "1", "--out", str(tmp_path / "ft"),
                 "--quiet"]) == 0  # the transfer's own --data, recorded in its run folder, is explicit too
