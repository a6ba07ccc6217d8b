"""Shared fixtures: small recorded trajectories, made once per session."""

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    os.environ["RAYTRAJ_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def digits_source(tmp_path_factory):
    """An MLP source trajectory on digits (seed 1) and the same recipe from seed 2 (Oracle's target)."""
    from raytraj.train import train_from_args

    root = tmp_path_factory.mktemp("digits")
    kw = dict(epochs=4, model_args={"hidden": [64, 64]}, progress=False)
    train_from_args("mlp", "digits", str(root / "source"), seed=1, **kw)
    train_from_args("mlp", "digits", str(root / "target"), seed=2, **kw)
    return root


@pytest.fixture
def cut_transfer_at(monkeypatch):
    """``cut(step)``: a Ctrl-C right after a transfer saved ``step``; it returns ``lift()``, which
    removes the cut so that a resume runs to the end."""
    from raytraj.transfer import RunCheckpointer

    real_save = RunCheckpointer.save

    def cut(step):
        def die(self, state, new_pairs, cache):
            real_save(self, state, new_pairs, cache)
            if state.step == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(RunCheckpointer, "save", die)
        return lambda: monkeypatch.setattr(RunCheckpointer, "save", real_save)

    return cut
