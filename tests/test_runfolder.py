"""RunFolder: the one home of a transfer run folder's file names and of load-or-run."""

import json

import pytest
import torch

from raytraj.runfolder import RunFolder
from raytraj.transfer import TransferConfig, transfer
from raytraj.transfer.checkpointing import RunCheckpointer


def test_a_finished_run_is_read_through_its_folder(digits_source, tmp_path):
    import raytraj

    assert raytraj.RunFolder is RunFolder and "RunFolder" in raytraj.__all__
    src, out = str(digits_source / "source"), str(tmp_path / "run")
    cfg = TransferConfig(method="fgmt", steps=4, seed=0)
    folder = RunFolder(out)
    assert not folder.started and not folder.finished and not folder.has_model()
    metrics = transfer(src, out, cfg, target_seed=2, progress=False)
    # The paths it names are the files the run wrote, with the layout they always had.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".raytraj-lock", "best.safetensors", "config.json", "final.safetensors", "metrics.json", "perm.json", "state"]
    assert folder.started and folder.finished and folder.has_model("best") and folder.has_model("final")
    assert folder.metrics() == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert folder.config()["transfer"]["steps"] == 4 and folder.config()["target_seed"] == 2
    assert folder.perm()["best_step"] == metrics["best_step"]
    state, info = folder.load_model("final")
    assert info["step"] == 4 and info["method"] == "fgmt" and all(torch.isfinite(v).all() for v in state.values())


def test_load_or_run_reads_a_finished_run_and_resumes_a_cut_one(digits_source, tmp_path, monkeypatch):
    src, out = str(digits_source / "source"), str(tmp_path / "cut")
    cfg = TransferConfig(method="fgmt", steps=5, seed=3)
    real_save = RunCheckpointer.save

    def die_at_step_3(self, state, new_pairs, cache):
        real_save(self, state, new_pairs, cache)
        if state.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunCheckpointer, "save", die_at_step_3)
    folder = RunFolder(out)
    calls = []

    def run(resume):
        calls.append(resume)
        return transfer(src, out, cfg, target_seed=7, resume=resume, progress=False)

    with pytest.raises(KeyboardInterrupt):
        folder.load_or_run(run)
    monkeypatch.setattr(RunCheckpointer, "save", real_save)
    assert folder.started and not folder.finished
    resumed = folder.load_or_run(run)  # without resume=True this would be refused as an unfinished run
    assert calls == [False, True] and resumed["steps"] == 5
    again = folder.load_or_run(run)  # finished: read back, not run (a rerun would be refused)
    assert calls == [False, True] and again == json.loads(json.dumps(resumed))
