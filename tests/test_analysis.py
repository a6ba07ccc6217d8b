"""raytraj analyze: interpolation barriers, the plane, trajectory similarity, the report, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from raytraj.analysis import (
    GridEvaluator,
    PlaneBasis,
    displacement_similarity,
    interpolate_models,
    trajectory_similarity,
    transfer_report,
)
from raytraj.analysis.align import checked_spec
from raytraj.analysis.interpolate import interpolation_title
from raytraj.checkpoint import save_checkpoint
from raytraj.ray_config import RayConfig
from raytraj.cli import main
from raytraj.data import load_data
from raytraj.perm import apply_permutation, random_permutation
from raytraj.trajectory import TrajectoryStore, TrajectoryWriter


@pytest.fixture(scope="module")
def setup(digits_source):
    src = TrajectoryStore(str(digits_source / "source"))
    data = load_data("digits")
    spec = checked_spec(src.meta["model"], data)
    perm = random_permutation(spec, torch.Generator().manual_seed(5))
    return src, data, spec, perm


def permuted_store(src: TrajectoryStore, out, spec, perm, iteration_offset: int = 0) -> str:
    """A planted trajectory: every step of ``src`` permuted by ``perm`` (same meta and step infos)."""
    writer = None
    for step, info in enumerate(src.manifest["steps"]):
        state = apply_permutation(spec, perm, src.read(step))
        info = {k: v for k, v in info.items() if k not in ("step", "file")}
        if step:
            info["iteration"] += iteration_offset
        if writer is None:
            writer = TrajectoryWriter.create(str(out), src.meta, state, src.param_names)
        writer.write(step, state, info)
    writer.finish()
    return str(out)


def test_self_permuted_has_zero_barrier_after_alignment_only(setup, tmp_path):
    src, _, spec, perm = setup
    permuted = apply_permutation(spec, perm, src.read(src.last_step))
    b = str(tmp_path / "perm.safetensors")
    save_checkpoint(b, permuted, {"source": src.location, "step": src.last_step})
    raw = interpolate_models(src.location, b, str(tmp_path / "raw"), points=5, align="none", progress=False)
    aligned = interpolate_models(src.location, b, str(tmp_path / "aligned"), points=5, align="weights", progress=False)
    assert raw["barrier"] > 0.1 and raw["val_acc"][2] < raw["val_acc"][0] - 10
    assert abs(aligned["barrier"]) < 1e-6 and np.allclose(aligned["val_loss"], aligned["val_loss"][0], atol=1e-6)
    assert raw["train_loss"][0] == pytest.approx(raw["train_loss"][-1], abs=1e-5)  # the same function
    saved = json.loads((tmp_path / "aligned" / "interpolate.json").read_text())
    assert {"alphas", "train_loss", "val_loss", "val_acc", "barrier"} <= set(saved) and len(saved["alphas"]) == 5
    assert (tmp_path / "raw" / "interpolate.png").read_bytes()[:4] == b"\x89PNG"
    # an MLP has no BatchNorm: the title must not claim a recalibration
    assert raw["bn_recalibrated"] is False
    assert interpolation_title(aligned) == "linear interpolation on digits, B weight-matched to A"
    assert "BatchNorm recalibrated" in interpolation_title({**aligned, "bn_recalibrated": True})


def test_similarity_is_one_under_the_true_permutation(setup, tmp_path):
    src, _, spec, perm = setup
    tgt = permuted_store(src, tmp_path / "planted", spec, perm)
    names = src.param_names
    steps = [src.read(s, names) for s in range(src.num_steps)]
    moved = [TrajectoryStore(tgt).read(s, names) for s in range(src.num_steps)]
    d1 = [{k: b[k] - a[k] for k in names} for a, b in zip(steps, steps[1:])]
    d2 = [{k: b[k] - a[k] for k in names} for a, b in zip(moved, moved[1:])]
    assert np.allclose(displacement_similarity(spec, perm, d1, d2), 1.0, atol=1e-6)
    r = trajectory_similarity(src.location, tgt, str(tmp_path / "sim"), window=10_000, every=1, progress=False)
    assert len(r["iterations"]) == src.num_steps - 1
    assert min(r["cos_matched"]) > 0.999 and r["mean_identity"] < 0.5
    assert (tmp_path / "sim" / "similarity.png").exists()


def test_plane_puts_a_at_origin_and_b_on_the_u_axis(setup, tmp_path):
    src, data, *_ = setup
    names = src.param_names
    a, b, c = (src.read(s) for s in (0, 2, src.last_step))
    basis = PlaneBasis.through(a, b, c, names)
    dist = float(torch.cat([(b[k] - a[k]).flatten() for k in names]).double().norm())
    assert basis.coords(a) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert basis.coords(b) == pytest.approx((dist, 0.0), rel=1e-9, abs=1e-9)
    assert basis.coords(c) == pytest.approx((basis.c, basis.h), rel=1e-9) and basis.h > 0
    ev = GridEvaluator(src.meta["model"], data, [a, b, c], splits=("val",), device="cpu")
    at_b = ev.state(basis.coefficients(dist, 0.0))
    assert all(torch.allclose(at_b[k], b[k], atol=1e-5) for k in names)
    assert main(["analyze", "plane", f"{src.location}:0", f"{src.location}:2", src.location, "--grid", "3",
                 "--labels", "init,early,final", "--out", str(tmp_path / "plane"), "--quiet"]) == 0
    r = json.loads((tmp_path / "plane" / "plane.json").read_text())
    assert r["coords"]["init"] == [0.0, 0.0] and r["coords"]["early"] == pytest.approx([dist, 0.0])
    assert np.array(r["val_loss"]).shape == (3, 3)


def test_plane_align_c_weight_matches_the_third_model_to_a(setup, tmp_path):
    from raytraj.analysis import AnalysisError, plane_landscape

    src, _, spec, perm = setup
    c = str(tmp_path / "permuted.safetensors")
    save_checkpoint(c, apply_permutation(spec, perm, src.read(src.last_step)), {"source": src.location})
    r = plane_landscape(src.location, f"{src.location}:0", c, str(tmp_path / "raw"), grid=2, labels="ABC",
                        progress=False)
    assert r["coords"]["C"][1] > 0  # a permuted copy of A lies off the line through A and B
    with pytest.raises(AnalysisError, match="C lies on the line"):  # matched back onto A, it is A
        plane_landscape(src.location, f"{src.location}:0", c, str(tmp_path / "aligned"), grid=2, align="c",
                        progress=False)


def test_report_page(digits_source, tmp_path):
    from raytraj.transfer import TransferConfig, transfer

    src = str(digits_source / "source")
    runs = []
    for method in ("naive", "fgmt"):
        runs.append(str(tmp_path / method))
        transfer(src, runs[-1], TransferConfig(method=method, steps=3, seed=0), target_seed=2, progress=False)
    r = transfer_report(runs, str(tmp_path / "report"), target=str(digits_source / "target"), points=3, progress=False)
    naive, fgmt = r["runs"]
    assert fgmt["best_val_acc"] > naive["best_val_acc"] and fgmt["per_step_s"]["solve"] > 0
    # both start at the trained target's loss; the transferred end differs per method
    assert naive["interpolation"]["train_loss"][0] == pytest.approx(fgmt["interpolation"]["train_loss"][0])
    assert fgmt["interpolation"]["train_loss"][-1] < naive["interpolation"]["train_loss"][-1]
    assert (tmp_path / "report" / "report.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def narrow_store(tmp_path_factory):
    from raytraj.train import train_from_args

    out = str(tmp_path_factory.mktemp("narrow") / "s")
    train_from_args("mlp", "digits", out, seed=1, epochs=1, model_args={"hidden": [16]}, progress=False)
    return out


def test_bad_inputs_are_one_line_errors(setup, narrow_store, tmp_path, capsys):
    src, _, spec, perm = setup

    def fails(*argv, says):
        assert main(["analyze", *map(str, argv), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("raytraj analyze: error:") and says in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1

    fails("interpolate", src.location, narrow_store, says="different architectures")
    fails("plane", src.location, f"{src.location}:0", narrow_store, says="different architectures")
    fails("similarity", "--source", src.location, "--target", narrow_store, says="different architectures")
    fails("interpolate", src.location, f"{src.location}:0", "--points", 1, says="--points must be >= 2")
    fails("plane", src.location, f"{src.location}:0", f"{src.location}:1", "--grid", 1, says="--grid must be >= 2")
    shifted = permuted_store(src, tmp_path / "shifted", spec, perm, iteration_offset=1)
    fails("similarity", "--source", src.location, "--target", shifted, "--every", 1, says="no overlapping steps")
    fails("interpolate", src.location, tmp_path / "nothing", says="not a trajectory store")
    fails("interpolate", src.location, f"{src.location}:0", "--data", "digits[0-4]", says="predict 10 classes")
    fails("interpolate", src.location, f"{src.location}:0", "--workers", 2, says="--workers needs --backend ray")


def test_analysis_does_not_import_ray():
    code = "import sys, raytraj.analysis, raytraj.analysis.cli; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never join a cluster left running
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_gives_the_local_numbers(setup, ray_cluster, tmp_path):
    src, *_ = setup
    kw = dict(points=4, align="none", progress=False)
    local = interpolate_models(f"{src.location}:1", src.location, str(tmp_path / "local"), **kw)
    remote = interpolate_models(f"{src.location}:1", src.location, str(tmp_path / "ray"), backend="ray",
                         ray_config=RayConfig(workers=2), **kw)
    for key in ("train_loss", "val_loss", "val_acc"):
        assert np.allclose(local[key], remote[key], rtol=1e-6), key
    assert remote["barrier"] == pytest.approx(local["barrier"], abs=1e-6)
