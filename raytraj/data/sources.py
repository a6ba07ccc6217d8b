"""Raw arrays from each data source, before splitting. Nothing is downloaded at run time."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..fs import atomic_write_bytes
from .fashion_mnist import load_fashion_mnist

Arrays = dict  # x_train, y_train, and optionally x_test, y_test (numpy)


def load_arrays(cfg) -> Arrays:
    if cfg.source == "digits":
        return _digits()
    if cfg.source == "mnist1d":
        return _mnist1d(cfg.num_samples or 20000)
    if cfg.source == "npz":
        return _npz(cfg.path)
    if cfg.source == "fashion-mnist":
        return load_fashion_mnist(cfg.path, cfg.num_samples, cfg.split_seed)
    return _torchvision(cfg.source, cfg.path)


def cache_dir() -> Path:
    """Where generated data is kept: $RAYTRAJ_CACHE, else ~/.cache/raytraj; a file there is refused."""
    given = os.environ.get("RAYTRAJ_CACHE")
    path = Path(given or Path.home() / ".cache" / "raytraj")
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = f"RAYTRAJ_CACHE={given}" if given else f"the data cache {path}"
                raise ConfigError(f"{where}: {p} is a file, not a folder; point RAYTRAJ_CACHE at a folder (it "
                                  "holds generated data such as mnist1d)")
            break
    return path


def _digits() -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    return {"x_train": (d.images / 16.0).astype(np.float32)[:, None], "y_train": d.target.astype(np.int64)}


def _mnist1d(num_samples: int) -> Arrays:
    """Generate with the mnist1d package once, then reuse the cached npz."""
    path = cache_dir() / f"mnist1d-{num_samples}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is regenerated below
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    # make_dataset seeds the global RNGs; keep the caller's streams intact.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {
        "x_train": d["x"].astype(np.float32)[:, None], "y_train": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32)[:, None], "y_test": d["y_test"].astype(np.int64),
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(path), buf.getvalue())
    return arrays


def _npz(path: str) -> Arrays:
    if not path or not Path(path).exists():
        raise ConfigError(f"npz file {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise ConfigError(f"{path}: not a plain-array npz ({e}); save with numpy.savez, no object arrays") from e
    missing = {"x_train", "y_train"} - set(arrays)
    if missing:
        raise ConfigError(f"{path} lacks arrays {sorted(missing)}; it needs x_train and y_train "
                          "(x_test and y_test optional)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigError(f"{path}: give both x_test and y_test, or neither")
    out = {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in arrays}
    for split in ("train", "test"):
        if f"y_{split}" not in out:
            continue
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if y.ndim != 1 or x.ndim < 1 or len(x) != len(y):
            raise ConfigError(f"{path}: x_{split} has {len(x) if x.ndim else 0} samples but y_{split} has shape "
                              f"{y.shape}; give one integer label per sample")
        if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.all(np.isfinite(y)) and
                                              np.array_equal(y, np.round(y))):
            raise ConfigError(f"{path}: y_{split} must hold integer class labels, got dtype {y.dtype}")
        if len(y) and y.min() < 0:
            raise ConfigError(f"{path}: y_{split} holds negative labels (min {y.min()}); labels are classes "
                              "0..K-1")
    for k in list(out):
        out[k] = out[k].astype(np.int64 if k.startswith("y") else np.float32)
        if k.startswith("x") and out[k].ndim == 1:
            raise ConfigError(f"{path}: {k} must have a sample axis and feature axes, got shape {out[k].shape}")
        if k.startswith("x") and not np.all(np.isfinite(out[k])):
            raise ConfigError(f"{path}: {k} holds NaN or inf values; clean the inputs first")
    return out


def _torchvision(name: str, root: str | None) -> Arrays:
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ConfigError(f"unknown data {name!r}: not one of digits, mnist1d, npz, fashion-mnist, and "
                          "torchvision (which provides the others) is not installed") from e
    classes = {k.lower(): getattr(tvd, k) for k in dir(tvd) if isinstance(getattr(tvd, k), type)}
    if name not in classes:
        from .config import KNOWN

        raise ConfigError(f"unknown data {name!r}; choose {KNOWN}")
    cls = classes[name]
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except (RuntimeError, FileNotFoundError) as e:
        raise ConfigError(f"{name} is not on disk under {root!r} ({e}). raytraj never downloads: fetch it once "
                          f"with torchvision.datasets.{cls.__name__}({root!r}, download=True)") from e

    def arrays(ds):
        x = np.asarray(ds.data, dtype=np.float32) / 255.0
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # (N,H,W) or (N,H,W,C) -> (N,C,H,W)
        return np.ascontiguousarray(x), np.asarray(ds.targets, dtype=np.int64)

    (xt, yt), (xs, ys) = arrays(train), arrays(test)
    return {"x_train": xt, "y_train": yt, "x_test": xs, "y_test": ys}
