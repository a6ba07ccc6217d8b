"""Honest degradation: how much of a model a spec permutes, said in one line, and FGMT/GMT/Oracle
refused (unless --force) when it permutes nothing or less than --min-coverage; Naive needs no spec."""

import json

import pytest
import torch

from raytraj.cli import main
from raytraj.models import build_model, model_config
from raytraj.perm import PermutationSpec, apply_permutation, check_spec, infer_spec, random_permutation
from raytraj.perm.coverage import spec_coverage
from raytraj.transfer import TransferConfig
from raytraj.transfer.run import transfer

STEPS = 3


def _mlp():
    return build_model(model_config("mlp", in_features=64, hidden=[32, 48], num_classes=10), 0)


def _only(spec: PermutationSpec, keep: set[str]) -> PermutationSpec:
    """``spec`` with every group but ``keep`` left unpermuted."""
    axes = {k: tuple(e if e in keep else None for e in a) for k, a in spec.axes.items()}
    return PermutationSpec(axes=axes, shapes=spec.shapes)


def test_coverage_counts_the_mlp_and_a_planted_permutation_keeps_the_function():
    model, x = _mlp(), torch.randn(8, 1, 8, 8)
    spec = infer_spec(model, x)
    cov = spec_coverage(spec, model, fixed={64, 10})
    # Two hidden layers: all 6 tensors but the head's bias move; every hidden axis (not the 64 input
    # features nor the 10 classes) is permuted.
    assert (cov.tensors, cov.tensors_permuted, cov.axes, cov.axes_permuted) == (6, 5, 6, 6)
    assert cov.names_unpermuted == ("head.bias",)
    # The counted axes really are symmetries: a planted permutation of them leaves the outputs unchanged.
    perm = random_permutation(spec, torch.Generator().manual_seed(3))
    moved = apply_permutation(spec, perm, model.state_dict())
    out = torch.func.functional_call(model, moved, (x,))
    assert torch.allclose(out, model(x), atol=1e-5)
    assert not torch.equal(moved["layers.0.weight"], model.state_dict()["layers.0.weight"])
    # Half the symmetry: one group of two.
    half = _only(spec, {sorted(spec.sizes)[0]})
    check_spec(model, half, x)
    partial = spec_coverage(half, model, fixed={64, 10})
    assert partial.tensors_permuted == 3 and partial.axes_permuted == 3 and partial.axes == 6
    none = spec_coverage(_only(spec, set()), model, fixed={64, 10})
    assert (none.tensors_permuted, none.axes_permuted, none.share) == (0, 0, 0.0)


def test_fgmt_refuses_a_spec_that_permutes_nothing_in_one_line(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")
    args = ["transfer", "--source", src, "--target-seed", "5", "--steps", str(STEPS), "--quiet",
            "--spec", "test_coverage:no_perm"]
    for method in ("fgmt", "gmt"):
        assert main([*args, "--method", method, "--out", str(tmp_path / method)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"0 of 6 tensors permutable: {method.upper()} would equal Naive" in err
        assert "--force" in err and not (tmp_path / method / "metrics.json").exists()
    # Forced: it runs, says so in one warning line, and equals Naive (which needs no spec at all).
    assert main([*args, "--method", "fgmt", "--force", "--out", str(tmp_path / "forced")]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "warning" in line] == [
        "raytraj transfer: warning: 0 of 6 tensors permutable: FGMT would equal Naive"]
    assert main(["transfer", "--source", src, "--target-seed", "5", "--steps", str(STEPS), "--quiet",
                 "--method", "naive", "--out", str(tmp_path / "naive")]) == 0
    forced = json.loads((tmp_path / "forced" / "metrics.json").read_text())
    naive = json.loads((tmp_path / "naive" / "metrics.json").read_text())
    assert forced["val_acc"] == naive["val_acc"]
    assert json.loads((tmp_path / "naive" / "perm.json").read_text())["best"] == {}


def no_perm(model):
    return PermutationSpec(axes={k: (None,) * v.dim() for k, v in model.state_dict().items()},
                           shapes={k: tuple(v.shape) for k, v in model.state_dict().items()})


def test_min_coverage_is_a_threshold_the_user_sets(digits_source, tmp_path):
    src = str(digits_source / "source")
    model = build_model(_store_model(src), 0)
    spec = infer_spec(model, torch.randn(8, 1, 8, 8))
    half = _only(spec, {sorted(spec.sizes)[0]})  # 3 of 6 tensors
    with pytest.raises(Exception, match=r"3 of 6 tensors permutable \(50%, below min_coverage 0.6\)"):
        transfer(src, str(tmp_path / "a"), TransferConfig(method="fgmt", steps=STEPS, min_coverage=0.6),
                 target_seed=5, spec=half, progress=False)
    m = transfer(src, str(tmp_path / "b"), TransferConfig(method="fgmt", steps=STEPS, min_coverage=0.5),
                 target_seed=5, spec=half, progress=False)
    perm = json.loads((tmp_path / "b" / "perm.json").read_text())["best"]
    assert sorted(perm) == sorted(half.sizes) and m["best_val_acc"] > 0
    with pytest.raises(Exception, match="min_coverage is a share"):
        TransferConfig(min_coverage=1.5)


def _store_model(src):
    from raytraj.models import model_from_dict
    from raytraj.trajectory import TrajectoryStore

    return model_from_dict(TrajectoryStore(src).meta["model"])


def test_spec_command_takes_a_factory_and_prints_coverage(capsys):
    assert main(["spec", "--model", "token_models:make_net", "--model-arg", "output=tuple",
                 "--data", "token_models:load"]) == 0
    out = capsys.readouterr().out
    assert "token_models:make_net on token_models:load: spec checked" in out and "tensors permuted" in out
    assert "hidden axes" in out
    assert main(["spec", "--model", "mlp", "--spec", "test_coverage:no_perm"]) == 0
    assert "0 of 6 tensors permuted (0%)" in capsys.readouterr().out
    assert main(["spec", "--model", "nope_pkg.nets:make"]) == 2
    assert "cannot import nope_pkg" in capsys.readouterr().err
