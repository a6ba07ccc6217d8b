"""``raytraj analyze`` with a bare safetensors endpoint (a state dict saved anywhere): its model and
data come from the other endpoint; tensors that do not fit are one line, exit 2."""

import json

import pytest
import torch
from safetensors.torch import save_file

from raytraj.analysis import interpolate_models
from raytraj.analysis.align import checked_spec
from raytraj.cli import main
from raytraj.data import load_data
from raytraj.perm import apply_permutation, random_permutation
from raytraj.trajectory import TrajectoryStore


@pytest.fixture(scope="module")
def source(digits_source):
    return TrajectoryStore(str(digits_source / "source"))


def test_a_bare_safetensors_endpoint_takes_the_other_endpoints_model_and_data(source, tmp_path):
    spec = checked_spec(source.meta["model"], load_data("digits"))
    permuted = apply_permutation(spec, random_permutation(spec, torch.Generator().manual_seed(5)),
                                 source.read(source.last_step))
    bare = str(tmp_path / "plain.safetensors")
    save_file({k: v.double() for k, v in permuted.items()}, bare)  # float64, no raytraj record
    r = interpolate_models(source.location, bare, str(tmp_path / "i"), points=3, align="weights", progress=False)
    assert abs(r["barrier"]) < 1e-5 and r["val_acc"][0] == pytest.approx(r["val_acc"][-1])  # the same function
    # the bare file may be A as well, taking B's record
    r2 = interpolate_models(bare, source.location, str(tmp_path / "j"), points=3, progress=False)
    assert r2["val_acc"][0] == pytest.approx(r["val_acc"][0])
    assert json.loads((tmp_path / "i" / "interpolate.json").read_text())["b"] == bare


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("head.bias"), "missing ['head.bias']"),
    (lambda s: s.__setitem__("extra", torch.zeros(2)), "unexpected ['extra']"),
    (lambda s: s.__setitem__("head.weight", torch.zeros(3, 3)), "wrong shapes head.weight (3, 3) vs"),
])
def test_tensors_that_do_not_fit_are_one_line(source, tmp_path, capsys, edit, message):
    state = {k: v.clone() for k, v in source.read(source.last_step).items()}
    edit(state)
    bare = str(tmp_path / "bad.safetensors")
    save_file(state, bare)
    assert main(["analyze", "interpolate", source.location, bare, "--out", str(tmp_path / "o"), "--points", "3",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the tensors of {bare} do not fit the mlp model of {source.location}" in err[0], err
    assert message in err[0], err
    assert main(["analyze", "interpolate", bare, bare, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no other model names an architecture" in capsys.readouterr().err
