"""The fashion-mnist source on small idx files the tests write (never the real data set)."""

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch

from raytraj.config import ConfigError
from raytraj.data import load_data, parse_data
from raytraj.data import fashion_mnist
from raytraj.data.idx import idx_bytes, parse_idx


def write_set(folder, n_train=300, n_test=60, size=6, gz=True, classes=10, seed=0):
    """Four idx files like Fashion-MNIST's, with images whose mean brightness encodes the class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % classes).astype(np.uint8)
        rng.shuffle(labels)
        images = (labels[:, None, None] * 20 + rng.integers(0, 20, (n, size, size))).astype(np.uint8)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(array)
            name = f"{split}-{kind}-idx{dims}-ubyte"
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return folder


def test_idx_round_trip_and_types():
    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1.5, -2.0], dtype=np.float32),
                  np.array([[70000, -3]], dtype=np.int32)):
        back = parse_idx(idx_bytes(array), "x")
        assert back.dtype == array.dtype and np.array_equal(back, array)
        assert np.array_equal(parse_idx(gzip.compress(idx_bytes(array)), "x.gz"), array)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1], "truncated or damaged"),
    (lambda b: b + b"\0", "truncated or damaged"),
    (lambda b: b"\x01" + b[1:], "not an idx file"),
    (lambda b: b[:2] + b"\x07" + b[3:], "not an idx file"),
    (lambda b: b[:6], "truncated idx header"),
    (lambda b: b"", "not an idx file"),
    (lambda b: gzip.compress(b)[:-9], "damaged gzip"),
])
def test_corrupt_idx_fails_with_one_line(damage, message):
    good = idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(ConfigError, match=message) as e:
        parse_idx(damage(good), "train-images-idx3-ubyte")
    assert "\n" not in str(e.value) and "train-images-idx3-ubyte" in str(e.value)


@pytest.mark.parametrize("gz", [True, False])
def test_loads_splits_from_a_folder(tmp_path, gz):
    folder = write_set(tmp_path / "fm", gz=gz)
    data = load_data(f"fashion-mnist:{folder}")
    assert data.input_shape == (1, 6, 6) and data.num_classes == 10
    assert data.size("test") == 60 and data.size("train") + data.size("val") == 300
    assert data.size("val") == 30  # val_fraction of the training images, as for every source
    # the labels are the files' labels: the class sets the brightness the images were written with
    raw = fashion_mnist.load_fashion_mnist(str(folder))
    assert np.array_equal(np.floor(raw["x_test"].mean(axis=(1, 2, 3)) * 255 / 20), raw["y_test"])


def test_class_subsets_and_balanced_size(tmp_path):
    folder = write_set(tmp_path / "fm")
    low = load_data(f"fashion-mnist:{folder}[0-4]")
    assert low.num_classes == 5 and set(low.y["test"].tolist()) == set(range(5))
    sub = load_data(f"fashion-mnist:{folder}:150")
    assert sub.size("train") + sub.size("val") == 150 and sub.size("test") == 60
    counts = np.bincount(np.concatenate([sub.y["train"].numpy(), sub.y["val"].numpy()]), minlength=10)
    assert counts.tolist() == [15] * 10
    again = load_data(f"fashion-mnist:{folder}:150")
    assert torch.equal(sub.x["train"], again.x["train"])
    assert parse_data(f"fashion-mnist:{folder}:150[5-9]").describe() == f"fashion-mnist:{folder}:150[5,6,7,8,9]"


def test_balanced_subset_passes_a_short_class_share_on():
    labels = np.array([0] * 5 + [1] * 100 + [2] * 100)
    keep = fashion_mnist.balanced_subset(labels, 105, seed=1)
    assert len(keep) == 105 and len(set(keep)) == 105
    assert np.bincount(labels[keep]).tolist() == [5, 50, 50]
    with pytest.raises(ConfigError, match="there are 205"):
        fashion_mnist.balanced_subset(labels, 300, seed=1)


def test_grammar():
    assert parse_data("fashion-mnist").path is None
    assert parse_data("fashion-mnist:20000").num_samples == 20000
    cfg = parse_data("fashion-mnist:s3://bucket/fm:20000[0-4]")
    assert (cfg.path, cfg.num_samples, cfg.classes) == ("s3://bucket/fm", 20000, (0, 1, 2, 3, 4))
    assert parse_data("fashion-mnist:file:///data/fm").path == "file:///data/fm"
    with pytest.raises(ConfigError, match=">= 100"):
        parse_data("fashion-mnist:50")


def test_missing_files_name_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist") as e:
        load_data("fashion-mnist")
    assert "\n" not in str(e.value)
    folder = write_set(tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError, match="lacks the idx files t10k-labels"):
        load_data(f"fashion-mnist:{folder}")


def test_mismatched_files_fail(tmp_path):
    folder = write_set(tmp_path / "fm")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(ConfigError, match="expected .N, H, W. images and N labels"):
        load_data(f"fashion-mnist:{folder}")


def test_cli_without_the_files_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "raytraj", "train", "--model", "conv", "--data",
                             f"fashion-mnist:{tmp_path / 'none'}", "--out", str(tmp_path / "out"), "--epochs", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "fashion-mnist" in lines[0] and "Traceback" not in result.stderr
