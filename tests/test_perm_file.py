"""Saved permutations are checked wherever they are read: a run folder's perm.json, and the
permutations a transfer's saved progress holds (read by --resume). An edited file that is not a
permutation, has other groups or other sizes is one line and exit 2, never used."""

import json

import pytest

from raytraj.checkpoint import load_checkpoint, save_checkpoint
from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.perm import perm_from_lists
from raytraj.runfolder import RunFolder
from raytraj.transfer import TransferConfig, transfer
from raytraj.transfer.checkpointing import PROGRESS, RunCheckpointer

EDITS = {
    "a repeated index": (lambda p: p["layers.0"].__setitem__(1, p["layers.0"][0]), "is not a permutation of 0..15 "
                                                                                     "(index"),
    "an index out of range": (lambda p: p["layers.0"].__setitem__(0, 99), "is not a permutation"),
    "a missing group": (lambda p: p.pop("layers.0"), "other groups than the model's permutation spec"),
    "an unknown group": (lambda p: p.__setitem__("nope", [0]), "unknown ['nope']"),
    "the wrong size": (lambda p: p["layers.0"].pop(), "has 15 indices, but the group has 16 units"),
    "not integers": (lambda p: p["layers.0"].__setitem__(0, "a"), "not a list of integer indices"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("permfile")
    assert main(["train", "--model", "mlp", "--data", "digits", "--epochs", "2", "--model-arg", "hidden=[16]",
                 "--out", str(root / "src"), "--quiet"]) == 0
    transfer(str(root / "src"), str(root / "run"), TransferConfig(method="fgmt", steps=3), target_seed=2,
             progress=False)
    return root


def test_perm_from_lists_checks_what_it_reads():
    assert perm_from_lists({"g": [1, 0, 2]}, {"g": 3})["g"].tolist() == [1, 0, 2]
    with pytest.raises(ConfigError, match="index 1 repeats"):
        perm_from_lists({"g": [1, 1, 2]}, where="x")


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_perm_json_is_refused(run, edit):
    path = RunFolder(str(run / "run")).perm_path
    good = json.loads(open(path).read())
    assert RunFolder(str(run / "run")).perm() == good
    bad = json.loads(json.dumps(good))
    change, message = EDITS[edit]
    change(bad["best"])
    with open(path, "w") as f:
        json.dump(bad, f)
    try:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            RunFolder(str(run / "run")).perm()
    finally:
        with open(path, "w") as f:
            json.dump(good, f)


@pytest.mark.parametrize("edit", ["a repeated index", "the wrong size", "a missing group"])
def test_an_edited_saved_permutation_is_refused_on_resume(run, tmp_path, capsys, monkeypatch, edit):
    out = tmp_path / "cut"
    real_save = RunCheckpointer.save

    def die_after_step_2(self, state, new_pairs, cache):
        real_save(self, state, new_pairs, cache)
        if state.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunCheckpointer, "save", die_after_step_2)
    argv = ["transfer", "--source", str(run / "src"), "--target-seed", "2", "--method", "fgmt", "--steps", "4",
            "--out", str(out), "--quiet"]
    assert main(argv) == 130
    monkeypatch.setattr(RunCheckpointer, "save", real_save)
    progress = str(out / "state" / PROGRESS)
    tensors, info = load_checkpoint(progress)
    EDITS[edit][0](info["tail"]["perms"][2])
    save_checkpoint(progress, tensors, info)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the saved permutation of step 2" in err[0], err
