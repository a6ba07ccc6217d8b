"""Offline data: bundled sets, class subsets, user arrays, fixed seeded splits."""

import numpy as np
import pytest
import torch

from raytraj.config import ConfigError
from raytraj.data import load_data, parse_data, sample_batches


def test_digits_splits_are_fixed_and_disjoint():
    a, b = load_data("digits"), load_data("digits")
    for split in ("train", "val", "test"):
        assert torch.equal(a.x[split], b.x[split]) and torch.equal(a.y[split], b.y[split])
    assert a.size("train") + a.size("val") + a.size("test") == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    rows = {s: {tuple(r.flatten().tolist()) for r in a.x[s]} for s in ("train", "val", "test")}
    assert not (rows["val"] & rows["test"])
    assert abs(float(a.x["train"].mean())) < 1e-4  # standardised with training statistics


def test_class_subsets_are_relabelled():
    low, high = load_data("digits[0-4]"), load_data("digits[5-9]")
    assert low.num_classes == high.num_classes == 5
    assert set(low.y["train"].tolist()) == set(high.y["train"].tolist()) == set(range(5))
    full = load_data("digits")
    assert low.size("test") + high.size("test") == full.size("test")
    assert parse_data("digits[0,3,5]").classes == (0, 3, 5)


def test_mnist1d_is_generated_once_and_cached(cache_dir):
    first = load_data("mnist1d:1000[5-9]")
    assert list(cache_dir.glob("mnist1d-1000.npz"))
    again = load_data("mnist1d:1000[5-9]")
    assert torch.equal(first.x["train"], again.x["train"])
    assert first.input_shape == (1, 40) and first.num_classes == 5


def test_npz_user_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.normal(size=(200, 7)), y_train=rng.integers(0, 3, 200))
    data = load_data(f"npz:{path}")
    assert data.input_shape == (7,) and data.num_classes == 3 and data.size("test") == 40
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(5, 2)))
    with pytest.raises(ConfigError, match="x_train and y_train"):
        load_data(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(ConfigError, match="does not exist"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")


@pytest.mark.parametrize("text", ["digits:3", "digits[4]", "mnist1d:abc", "??", "npz"])
def test_malformed_data_strings_fail_loudly(text):
    with pytest.raises(ConfigError):
        parse_data(text)


def test_unknown_dataset_and_absent_classes():
    with pytest.raises(ConfigError, match="unknown data|not on disk"):
        load_data("imagenet21k:/nowhere")
    with pytest.raises(ConfigError, match="do not occur"):
        load_data("digits[8-12]")


def test_sample_batches_reshuffles_when_it_runs_out():
    batches = sample_batches(10, 4, 5, np.random.default_rng(0))
    assert len(batches) == 5 and all(len(b) == 4 for b in batches)
    assert sorted(np.concatenate(batches[:2]).tolist()) == sorted(set(np.concatenate(batches[:2]).tolist()))
