"""CNN transfers: zoo defaults that train, BatchNorm handled along the transfer, and the
pre-trained scenario on a BatchNorm CNN where FGMT must beat Naive by a wide margin."""

import json

import numpy as np
import pytest
import torch

from raytraj.cli import main
from raytraj.data import load_data
from raytraj.evaluation import chance_accuracy
from raytraj.models import build_model, config_for_data
from raytraj.perm import apply_permutation, infer_spec, random_permutation
from raytraj.train import train_from_args
from raytraj.trajectory import TrajectoryStore, TrajectoryWriter
from raytraj.transfer import TransferConfig, bn_batches_for, transfer
from raytraj.transfer.problem import prepare
from raytraj.transfer.run import local_worker

SMALL_BN_CNN = {"channels": [16, 32], "pool_after": [0], "fc": [64], "batch_norm": True}
FAST = dict(epochs=6, lr=0.05, warmup_epochs=1, progress=False)


@pytest.fixture(scope="module")
def bn_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("bn")
    train_from_args("conv", "digits", str(root / "src"), seed=1, model_args=SMALL_BN_CNN, **FAST)
    return root


@pytest.mark.slow  # trains CNNs and transfers them end to end
def test_default_init_lets_a_plain_conv8_train_where_torch_default_init_stays_at_chance(tmp_path):
    """PyTorch's default init shrinks each ReLU layer's variance ~6x: eight plain convs never leave chance."""
    data = load_data("digits")
    accs = {}
    for init in ("kaiming", "torch"):
        r = train_from_args("conv", "digits", str(tmp_path / init), seed=1, model_args={"width": 0.25, "init": init},
                            **{**FAST, "warmup_epochs": 2})
        accs[init] = r.val_acc[-1]
        assert r.at_chance_level == (init == "torch"), (init, r.val_acc)
    assert accs["kaiming"] > accs["torch"] + 20 and accs["torch"] < chance_accuracy(data, "val") + 10


@pytest.mark.slow  # trains CNNs and transfers them end to end
def test_bn_batches_reach_the_recalibration_and_set_its_statistics(bn_source):
    """The recalibrated running mean is the average of the chosen batches' channel means."""
    src = str(bn_source / "src")
    stats = {}
    for count in (1, 5):
        cfg = TransferConfig(method="naive", steps=3, bn_batches=count)
        problem = prepare(src, cfg, target_seed=2)
        worker = local_worker(problem, cfg, "cpu")
        perm = {g: torch.arange(n) for g, n in problem.spec.sizes.items()}
        state = worker.materialize(perm, 3, step=3)
        stats[count] = state["features.1.running_mean"]
        # recompute by hand: the first conv's output channel means on the same batches
        raw = worker.target_point(perm, 3)
        batches = bn_batches_for(cfg.seed, 3, problem.data.size("train"), cfg.batch_size, count)
        conv = torch.nn.functional.conv2d
        means = [conv(problem.data.x["train"][torch.as_tensor(b)], raw["features.0.weight"], padding=1).mean((0, 2, 3))
                 for b in batches]
        torch.testing.assert_close(stats[count], torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(stats[1], stats[5])


@pytest.mark.slow  # trains CNNs and transfers them end to end
def test_planted_bn_cnn_transfer_reproduces_the_source(bn_source, tmp_path):
    """Target init = the source's init permuted: FGMT must find that permutation, and the transferred
    BatchNorm model (buffers recalibrated) must score what the source scores."""
    src = TrajectoryStore(str(bn_source / "src"))
    data = load_data("digits")
    model = build_model(config_for_data("conv", data.input_shape, data.num_classes, **SMALL_BN_CNN), 0)
    spec = infer_spec(model, data.x["train"][:8])
    planted = random_permutation(spec, torch.Generator().manual_seed(3))
    init = apply_permutation(spec, planted, src.read(0))
    writer = TrajectoryWriter.create(str(tmp_path / "init"), src.meta, init, src.param_names)
    writer.write(0, init, {})
    writer.finish()
    m = transfer(src.location, str(tmp_path / "fgmt"), TransferConfig(method="fgmt", steps=src.last_step,
                                                                       schedule="actual"),
                 target_init=str(tmp_path / "init"), progress=False)
    found = json.loads((tmp_path / "fgmt" / "perm.json").read_text())["final"]
    # BatchNorm before every ReLU keeps all conv channels alive, so they are found exactly; units of the
    # plain FC layer that no batch activates get no gradient and may go anywhere without any effect
    recovered = {g: float((torch.tensor(found[g]) == planted[g]).float().mean()) for g in planted}
    assert all(v == 1.0 for g, v in recovered.items() if g.startswith("features")), recovered
    # the actual trajectory through the permuted init is the source's own, step for step
    assert abs(m["final_val_acc"] - src.meta["val_acc"][-1]) <= 100 / data.size("val") + 1e-6


@pytest.mark.slow  # trains CNNs and transfers them end to end
def test_pretrained_bn_cnn_fgmt_beats_naive_by_a_wide_margin(tmp_path):
    """The paper's pre-trained scenario on a BatchNorm CNN: digits 0-4 -> 5-9 with new heads."""
    kw = dict(model_args=SMALL_BN_CNN, **FAST)
    for seed in (1, 2):
        train_from_args("conv", "digits[0-4]", str(tmp_path / f"pre{seed}"), seed=seed, **kw)
    train_from_args("conv", "digits[5-9]", str(tmp_path / "ft1"), seed=1, init=str(tmp_path / "pre1"), new_head=True,
                    **kw)
    best = {}
    for method in ("naive", "fgmt"):
        m = transfer(str(tmp_path / "ft1"), str(tmp_path / method), TransferConfig(method=method, steps=6),
                     target_init=str(tmp_path / "pre2"), new_head=True, progress=False)
        best[method] = m["best_val_acc"]
    assert best["fgmt"] > best["naive"] + 20, best


def test_chance_level_source_warns_in_train_and_is_refused_by_transfer(tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["train", "--model", "conv", "--data", "digits", "--epochs", "1", "--seed", "1", "--out", str(src),
                 "--model-arg", "width=0.125", "--model-arg", "init=torch", "--quiet"]) == 0
    assert "ends at chance level" in capsys.readouterr().err
    argv = ["transfer", "--source", str(src), "--target-seed", "2", "--method", "naive", "--steps", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raytraj transfer: error:") and "--force" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t" / "metrics.json").exists()
    assert main([*argv, "--out", str(tmp_path / "t"), "--force"]) == 0


def test_ensemble_refuses_a_chance_level_source_before_starting_ray(tmp_path, capsys):
    src = tmp_path / "src"
    train_from_args("conv", "digits", str(src), seed=1, model_args={"width": 0.125, "init": "torch"},
                    epochs=1, progress=False)
    assert main(["ensemble", "--source", str(src), "--members", "2", "--steps", "2", "--out",
                 str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raytraj ensemble: error:") and "chance level" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ens").exists()
