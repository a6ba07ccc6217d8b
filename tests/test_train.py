"""Training with recording: checkpoints into the store, init from a checkpoint, and resume."""

import pytest
import torch

from raytraj.config import ConfigError
from raytraj.data import load_data
from raytraj.models import config_for_data
from raytraj.train import TrainConfig, lr_at, train, train_from_args
from raytraj.trajectory import TrajectoryError, TrajectoryStore, TrajectoryWriter


def test_records_init_and_every_epoch_and_learns(tmp_path):
    r = train_from_args("mlp", "digits", str(tmp_path / "s"), seed=0, epochs=3, model_args={"hidden": [32]},
                        progress=False)
    store = TrajectoryStore(str(tmp_path / "s"))
    assert store.complete and store.num_steps == 4 and r.steps == 3
    assert [s["epoch"] for s in store.manifest["steps"]] == [0.0, 1.0, 2.0, 3.0]
    assert store.meta["recipe"]["epochs"] == 3 and store.meta["model"]["hidden"] == [32]
    assert r.val_acc[-1] > 60 and store.meta["test_acc"] == r.test_acc  # chance is 10%
    assert not torch.equal(store.read(0)["head.weight"], store.read(3)["head.weight"])


def test_save_every_iterations(tmp_path):
    train_from_args("mlp", "digits[0-4]", str(tmp_path / "s"), epochs=1, save_every=2, progress=False)
    store = TrajectoryStore(str(tmp_path / "s"))
    iters = [s["iteration"] for s in store.manifest["steps"]]
    assert iters[:3] == [0, 2, 4] and iters[-1] == store.step_info(store.last_step)["iteration"]


def test_cosine_lr_with_warmup():
    cfg = TrainConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert lr_at(cfg, 0, 10) == pytest.approx(0.01)
    assert lr_at(cfg, 9, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 55, 10) == pytest.approx(0.05, abs=0.01)
    assert lr_at(cfg, 99, 10) < 0.001


def interrupted_after(writes: int, monkeypatch, run) -> None:
    """Run ``run`` with a Ctrl-C right after the store's ``writes``-th step is written."""
    calls = {"n": 0}
    real_write = TrajectoryWriter.write

    def crash(self, step, state, info=None):
        real_write(self, step, state, info)
        calls["n"] += 1
        if calls["n"] == writes:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrajectoryWriter, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(TrajectoryWriter, "write", real_write)


def test_interrupted_training_resumes_to_the_same_trajectory(tmp_path, monkeypatch):
    kw = dict(epochs=4, model_args={"hidden": [16]}, progress=False, seed=5)
    train_from_args("mlp", "digits", str(tmp_path / "full"), **kw)

    interrupted_after(3, monkeypatch,  # init + 2 epochs recorded
                      lambda: train_from_args("mlp", "digits", str(tmp_path / "cut"), **kw))
    assert not TrajectoryStore(str(tmp_path / "cut")).complete
    with pytest.raises(ConfigError, match="other settings"):
        train_from_args("mlp", "digits", str(tmp_path / "cut"), **{**kw, "epochs": 5})
    train_from_args("mlp", "digits", str(tmp_path / "cut"), **kw)
    full, cut = TrajectoryStore(str(tmp_path / "full")), TrajectoryStore(str(tmp_path / "cut"))
    assert cut.complete and cut.num_steps == full.num_steps == 5
    assert 0 < full.meta["cpu_s"] and 0 < cut.meta["cpu_s"]  # CPU seconds, both parts of the cut run summed
    for step in range(5):
        a, b = full.read(step), cut.read(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step
    with pytest.raises(TrajectoryError, match="finished"):
        train_from_args("mlp", "digits", str(tmp_path / "cut"), **kw)


def test_init_from_a_checkpoint_with_a_new_head(tmp_path):
    train_from_args("conv", "digits[0-4]", str(tmp_path / "pre"), epochs=1, model_args={"width": 0.0625},
                    progress=False)
    pre = TrajectoryStore(str(tmp_path / "pre"))
    train_from_args("conv", "digits[5-9]", str(tmp_path / "ft"), epochs=1, init=f"{tmp_path / 'pre'}:1",
                    new_head=True, model_args={"width": 0.0625}, progress=False, seed=3)
    ft = TrajectoryStore(str(tmp_path / "ft"))
    start = ft.read(0)
    assert torch.equal(start["features.0.weight"], pre.read(1)["features.0.weight"])
    assert not torch.equal(start["head.weight"], pre.read(1)["head.weight"])
    assert ft.meta["init"] == {"store": str(tmp_path / "pre"), "step": 1}


def test_init_of_another_architecture_is_refused(tmp_path):
    train_from_args("mlp", "digits", str(tmp_path / "mlp"), epochs=1, model_args={"hidden": [16]}, progress=False)
    with pytest.raises(ConfigError, match="does not fit the model"):
        train_from_args("mlp", "digits", str(tmp_path / "x"), epochs=1, init=str(tmp_path / "mlp"),
                        model_args={"hidden": [24]}, progress=False)
    with pytest.raises(ConfigError, match="unknown training recipe keys"):
        train_from_args("mlp", "digits", str(tmp_path / "y"), epochs=1, learning_rate=0.1, progress=False)


def test_divergence_is_reported(tmp_path):
    data = load_data("digits")
    cfg = config_for_data("mlp", data.input_shape, data.num_classes, hidden=(16,))
    with pytest.raises(FloatingPointError, match="lower --lr"):
        train(cfg, data, TrainConfig(epochs=2, lr=1e6), 0, str(tmp_path / "s"), progress=False)


def test_dropout_training_repeats_when_seeded_and_resumes_at_an_epoch_as_it_would_have_gone(tmp_path, monkeypatch):
    from userpkg import importable, write_user_package

    importable(write_user_package(tmp_path / "outside"))  # a model with Dropout (not in the zoo)
    kw = dict(epochs=3, model_args={"width": 16}, progress=False, seed=4)
    for name in ("a", "b"):
        train_from_args("byo_userpkg.nets:make_net", "digits", str(tmp_path / name), **kw)
    interrupted_after(2, monkeypatch,  # init + 1 epoch recorded
                      lambda: train_from_args("byo_userpkg.nets:make_net", "digits", str(tmp_path / "cut"), **kw))
    train_from_args("byo_userpkg.nets:make_net", "digits", str(tmp_path / "cut"), **kw)
    a, b, cut = (TrajectoryStore(str(tmp_path / n)) for n in ("a", "b", "cut"))
    for step in range(a.num_steps):
        x, y, z = a.read(step), b.read(step), cut.read(step)
        assert all(torch.equal(x[k], y[k]) and torch.equal(x[k], z[k]) for k in x), step


def test_train_as_a_library_leaves_the_callers_random_stream_as_it_was(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    train_from_args("mlp", "digits", str(tmp_path / "s"), seed=0, epochs=1, model_args={"hidden": [16]},
                    progress=False)
    assert torch.equal(torch.rand(4), expected)  # training seeded its own Dropout stream, not the caller's
