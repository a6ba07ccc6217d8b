"""``raytraj compare``: a scenario end to end, with the seeds that make its baselines fair."""

import json

import pytest
import torch

from raytraj.checkpoint import load_checkpoint
from raytraj.cli import main
from raytraj.compare import parse_pairs
from raytraj.config import ConfigError
from raytraj.runfolder import RunFolder
from raytraj.trajectory import TrajectoryStore

TINY = ["--model", "mlp", "--model-arg", "hidden=[16]", "--epochs", "2", "--steps", "4", "--quiet"]


def test_pretrained_comparison_in_one_command(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--pretrain-data", "digits[0-4]", "--data", "digits[5-9]", "--seed", "3",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("| Naive |", "| FGMT |", "| Oracle |", "| plain fine-tune from the target init |",
                "| target fine-tuned (the recipe) |", "| source (the recipe) |"):
        assert row in table, table
    result = json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").stat().st_size > 0 and result["scenario"] == "pre-trained"
    row = result["rows"][0]
    assert set(row["after"]) == {"fgmt", "naive", "plain"} and row["after"]["fgmt"]["epochs"] == 1
    root = out / "1-2"
    # The Oracle's target is the trained version of the transfer's own init: pre-B with the new head that
    # the transfer's --seed 3 draws. The naive run's final model is that init plus the source's displacement.
    naive, _ = load_checkpoint(RunFolder(str(root / "naive")).model_path("final"))
    src = TrajectoryStore(str(root / "source"))
    first, last = src.read(0), src.read(src.last_step)
    target_init = {k: naive[k] - (last[k] - first[k]) for k in first}
    target0 = TrajectoryStore(str(root / "target")).read(0)
    assert all(torch.allclose(target_init[k], target0[k], atol=1e-5) for k in first)
    assert not torch.allclose(target0["head.weight"], first["head.weight"])  # its own head, not the source's
    assert f"| FGMT | {row['runs']['fgmt']['best_val_acc']:.1f} |" in table
    # A second call reads every stage back instead of running it again.
    mtimes = {p: p.stat().st_mtime for p in root.rglob("*.safetensors")}
    assert main(["compare", *TINY, "--pretrain-data", "digits[0-4]", "--data", "digits[5-9]", "--seed", "3",
                 "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime for p in root.rglob("*.safetensors")} == mtimes


@pytest.mark.slow
def test_random_init_comparison_averages_seed_pairs(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--data", "digits", "--pairs", "1-2,3-4", "--methods", "naive,fgmt",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| random init |" in table and " ± " in table and "| Oracle |" not in table
    assert "| plain training from the target init |" in table
    # random init: the target is trained from the transfer's --target-seed B
    assert TrajectoryStore(str(out / "3-4" / "target")).meta["seed"] == 4


def test_bad_comparisons_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="two different integers"):
        parse_pairs("1-1")
    assert main(["compare", *TINY, "--data", "digits", "--methods", "fgmt,magic", "--out", str(tmp_path / "x")]) == 2
    assert "unknown ['magic']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
