"""Fashion-MNIST from its four idx files: 60k training and 10k test images, 28x28 grey, 10 classes.

Nothing is downloaded. The files are read from Debian's ``dataset-fashion-mnist`` folder by
default, or from a folder (local path or URI, see fs.py) the user names:
``fashion-mnist``, ``fashion-mnist:/data/fmnist``, ``fashion-mnist:s3://bucket/fmnist``. A size
(``fashion-mnist:20000``, ``fashion-mnist:/data/fmnist:20000``) keeps a class-balanced, seeded
subset of the training images; the test images are kept whole.
"""

from __future__ import annotations

import re

import numpy as np

from .. import fs
from ..config import ConfigError
from .idx import parse_idx

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
# The official names, with or without .gz; some mirrors write ".idx3-ubyte".
_FILE = re.compile(r"^(train|t10k)-(images|labels)[-.]idx([13])-ubyte(\.gz)?$")


def idx_files(folder: str) -> dict[tuple[str, str], str]:
    """(split, kind) -> location of the four idx files under ``folder``; ConfigError naming the fix if absent."""
    try:
        names = fs.listdir(folder)
    except fs.StorageError:
        raise
    except OSError:  # a file, not a folder
        names = []
    found: dict[tuple[str, str], str] = {}
    for name in names:
        m = _FILE.match(name)
        if m and (m[1], m[2]) not in found:
            found[(m[1], m[2])] = fs.join(folder, name)
    missing = [f"{s}-{k}" for s in ("train", "t10k") for k in ("images", "labels") if (s, k) not in found]
    if missing:
        where = (f"install them with `apt-get install {PACKAGE}` (into {DEFAULT_DIR}), or give their folder as "
                 "fashion-mnist:PATH") if folder == DEFAULT_DIR else "give the folder that holds them"
        raise ConfigError(f"fashion-mnist: {folder} lacks the idx files {', '.join(missing)} "
                          f"(e.g. train-images-idx3-ubyte.gz); {where}")
    return found


def load_fashion_mnist(folder: str | None = None, num_samples: int | None = None, seed: int = 777) -> dict:
    """x_train (N,1,28,28) in [0,1], y_train, x_test, y_test as numpy arrays.

    Args:
        folder: where the idx files are (default: the Debian package's folder).
        num_samples: keep this many training images, as equal a share of every class as the
            data allows, chosen by ``seed`` (default: all 60,000).
        seed: fixes the subset.
    """
    folder = folder or DEFAULT_DIR
    files = idx_files(folder)
    arrays = {}
    for split, key in (("train", "train"), ("t10k", "test")):
        images = parse_idx(fs.read_bytes(files[(split, "images")]), files[(split, "images")])
        labels = parse_idx(fs.read_bytes(files[(split, "labels")]), files[(split, "labels")])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(f"fashion-mnist: {files[(split, 'images')]} holds shape {images.shape} and "
                              f"{files[(split, 'labels')]} shape {labels.shape}; expected (N, H, W) images "
                              "and N labels")
        if images.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"fashion-mnist: {files[(split, 'images')]} must hold uint8 pixels and "
                              f"{files[(split, 'labels')]} integer labels, got {images.dtype} and {labels.dtype}")
        arrays[f"x_{key}"] = (images.astype(np.float32) / 255.0)[:, None]
        arrays[f"y_{key}"] = labels.astype(np.int64)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ConfigError(f"fashion-mnist: train images are {arrays['x_train'].shape[2:]} but test images "
                          f"{arrays['x_test'].shape[2:]}")
    if num_samples is not None:
        keep = balanced_subset(arrays["y_train"], num_samples, seed)
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    return arrays


def balanced_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` samples, an equal share per class (classes short of it give all they have)."""
    if size > len(labels):
        raise ConfigError(f"fashion-mnist: a subset of {size} training images asked, but there are {len(labels)}")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    taken = [0] * len(pools)
    left = size
    while left:  # deal the quota out round by round, so a short class passes its share on
        open_ = [i for i, p in enumerate(pools) if taken[i] < len(p)]
        share = max(1, left // len(open_))
        for i in open_:
            step = min(share, len(pools[i]) - taken[i], left)
            taken[i] += step
            left -= step
            if not left:
                break
    return np.sort(np.concatenate([p[:n] for p, n in zip(pools, taken)]))
