"""Data options after a comma (``npz:PATH,n=N,val=F``): a seeded subset and the split fractions,
recorded with the store so that every later command reloads the same splits."""

import numpy as np
import pytest

from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.data import load_data, parse_data
from raytraj.trajectory import TrajectoryStore


@pytest.fixture()
def npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 1, 4, 4)).astype(np.float32)
    y = np.arange(300) % 3  # sorted blocks would make "the first n" one class; the subset is drawn
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    np.savez(tmp_path / "t.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    return tmp_path


def sizes(data):
    return {s: data.size(s) for s in ("train", "val", "test")}


def test_n_and_the_fractions_shape_the_splits(npz):
    path = npz / "d.npz"
    assert sizes(load_data(f"npz:{path}")) == {"train": 216, "val": 24, "test": 60}  # defaults: val 0.1, test 0.2
    assert sizes(load_data(f"npz:{path},n=100")) == {"train": 72, "val": 8, "test": 20}
    assert sizes(load_data(f"npz:{path},n=100,val=0.25,test=0.3")) == {"train": 52, "val": 18, "test": 30}
    # with its own test arrays, the file's test split is kept whole
    assert sizes(load_data(f"npz:{npz / 't.npz'},n=100,val=0.2")) == {"train": 80, "val": 20, "test": 40}
    a, b = load_data(f"npz:{path},n=100"), load_data(f"npz:{path},n=100")
    assert all(np.array_equal(a.x[s], b.x[s]) for s in ("train", "val", "test"))  # the subset is seeded
    assert set(np.unique(a.y["train"]).tolist()) == {0, 1, 2}
    sub = load_data(f"npz:{path},n=100[0-1]")  # with a class subset
    assert set(np.unique(sub.y["train"]).tolist()) == {0, 1}


@pytest.mark.parametrize("text, message", [
    ("npz:{p},n=1000", "n=1000, but"), ("npz:{p},n=abc", "must be an integer"), ("npz:{p},val=1.5", "between 0 and 1"),
    ("npz:{p},val=0.6,test=0.5", "leave no training samples"), ("npz:{p},size=10", "unknown data option size="),
    ("digits,n=100", "takes none"),
])
def test_bad_options_are_one_clear_error(npz, text, message):
    with pytest.raises(ConfigError, match=message):
        load_data(text.format(p=npz / "d.npz"))


def test_options_travel_with_the_store(npz, tmp_path, capsys):
    text = f"npz:{npz / 'd.npz'},n=120,val=0.2"
    assert parse_data(parse_data(text).describe()) == parse_data(text)
    out = tmp_path / "src"
    assert main(["train", "--model", "mlp", "--model-arg", "hidden=[8]", "--data", text, "--epochs", "1",
                 "--out", str(out), "--quiet"]) == 0
    recorded = TrajectoryStore(str(out)).data_config()
    assert recorded == parse_data(text) and sizes(load_data(recorded)) == {"train": 77, "val": 19, "test": 24}
    assert main(["train", "--model", "mlp", "--data", f"npz:{npz / 'd.npz'},val=7", "--epochs", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "val=7: a fraction" in capsys.readouterr().err
