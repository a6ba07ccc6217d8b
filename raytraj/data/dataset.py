"""In-memory train/val/test splits, fixed by a seed, and seeded mini-batch sampling.

Transfer curves and best-step selection use ``val``; only the chosen step is scored on ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError
from .config import DataConfig, parse_data
from .sources import load_arrays
from .user import SPLITS, call_data_function, splits_to_tensors


@dataclass
class Dataset:
    """Train, val and test tensors in memory, standardised with the training split's statistics.

    Args:
        config: the DataConfig it was loaded from.
        x: split -> inputs (N, *input_shape).
        y: split -> labels 0..num_classes-1.
        num_classes: the number of classes.
    """

    config: DataConfig
    x: dict[str, torch.Tensor]  # split -> inputs (N, *input_shape), standardised with train statistics
    y: dict[str, torch.Tensor]  # split -> labels 0..num_classes-1
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x["train"].shape[1:])

    def size(self, split: str) -> int:
        return len(self.y[split])

    def batch(self, split: str, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x[split][idx], self.y[split][idx]

    def summary(self) -> str:
        return (f"{self.config.describe()}: {self.num_classes} classes, input {self.input_shape}, "
                + ", ".join(f"{s} {self.size(s)}" for s in SPLITS))


def load_data(config: DataConfig | str) -> Dataset:
    """The dataset ``config`` names, split and standardised; the same config gives the same splits.

    Args:
        config: a DataConfig or a data string (``digits``, ``digits[0-4]``, ``mnist1d:N``,
            ``npz:PATH``, ``cifar10:ROOT``, ``package.module:function``). A data function gives
            its own splits, used as they are.

    Returns:
        the Dataset: train, val and test tensors.
    """
    cfg = parse_data(config) if isinstance(config, str) else config
    if cfg.source == "import":
        if cfg.classes is not None:
            raise ConfigError(f"{cfg.path}: a class subset applies to bundled data only; select classes in the "
                              "data function")
        return dataset_from_splits(call_data_function(cfg.path, cfg.args), cfg)
    if cfg.args:
        raise ConfigError(f"--data-arg goes with a data function (--data package.module:function), not with "
                          f"{cfg.describe()}")
    arrays = load_arrays(cfg)
    if cfg.source == "npz" and cfg.num_samples:
        arrays = _take_samples(arrays, cfg)
    rng = np.random.default_rng(cfg.split_seed)
    x, y = arrays["x_train"], arrays["y_train"]
    if "x_test" in arrays:
        xs = {"test": arrays["x_test"]}
        ys = {"test": arrays["y_test"]}
    else:
        order = rng.permutation(len(y))
        n_test = int(round(cfg.test_fraction * len(y)))
        xs, ys = {"test": x[order[:n_test]]}, {"test": y[order[:n_test]]}
        x, y = x[order[n_test:]], y[order[n_test:]]
    order = rng.permutation(len(y))
    n_val = int(round(cfg.val_fraction * len(y)))
    xs["val"], ys["val"] = x[order[:n_val]], y[order[:n_val]]
    xs["train"], ys["train"] = x[order[n_val:]], y[order[n_val:]]

    if cfg.classes is not None:
        present = set(np.unique(ys["train"]).tolist())
        absent = [c for c in cfg.classes if c not in present]
        if absent:
            raise ConfigError(f"classes {absent} do not occur in {cfg.source}; it has classes {sorted(present)}")
        relabel = np.full(max(max(present), max(cfg.classes)) + 1, -1)
        relabel[list(cfg.classes)] = np.arange(len(cfg.classes))
        for s in SPLITS:
            keep = np.isin(ys[s], cfg.classes)
            xs[s], ys[s] = xs[s][keep], relabel[ys[s][keep]]
        num_classes = len(cfg.classes)
    else:
        num_classes = int(max(ys[s].max() for s in SPLITS if len(ys[s]))) + 1

    for s in SPLITS:
        if len(ys[s]) == 0:
            raise ConfigError(f"{cfg.describe()}: the {s} split is empty; use more samples or a larger fraction")
    # One mean and std per input channel, from the training split only.
    axes = (0,) + tuple(range(2, xs["train"].ndim))
    mean = xs["train"].mean(axis=axes, keepdims=True)
    std = xs["train"].std(axis=axes, keepdims=True) + 1e-6
    return Dataset(
        config=cfg,
        x={s: torch.from_numpy(((xs[s] - mean) / std).astype(np.float32)) for s in SPLITS},
        y={s: torch.from_numpy(ys[s].astype(np.int64)) for s in SPLITS},
        num_classes=num_classes,
    )


def fingerprint(data: Dataset) -> dict:
    """What identifies the tensors a dataset holds: each split's shape and a hash of inputs and labels.
    A store records it when it is made; a later command that loads other data for the same
    reference (a data function that changes between calls, an edited file) is caught by it."""
    import hashlib

    h = hashlib.sha256()
    for s in SPLITS:
        for t in (data.x[s], data.y[s]):
            h.update(str((s, tuple(t.shape), str(t.dtype))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": h.hexdigest()[:16], "shapes": {s: list(data.x[s].shape) for s in SPLITS},
            "num_classes": data.num_classes}


def _take_samples(arrays: dict, cfg: DataConfig) -> dict:
    """``n=N``: N of the file's training samples, drawn once from the split seed (before the val split;
    its test arrays are kept whole)."""
    n, have = cfg.num_samples, len(arrays["y_train"])
    if n > have:
        raise ConfigError(f"{cfg.describe()}: n={n}, but {cfg.path} holds {have} training samples; give n <= {have}")
    keep = np.sort(np.random.default_rng([cfg.split_seed, 1]).permutation(have)[:n])
    return {**arrays, "x_train": arrays["x_train"][keep], "y_train": arrays["y_train"][keep]}


def dataset_from_splits(splits, config: DataConfig | None = None) -> Dataset:
    """A Dataset from a ``{"train": (x, y), "val": ..., "test": ...}`` mapping (contract in user.py).

    Args:
        splits: the mapping; values are (inputs, labels) pairs or torch Datasets.
        config: what made it, for the record (default: in-memory data, which cannot be reloaded).
    """
    cfg = config or DataConfig(source="memory")
    xs, ys, num_classes = splits_to_tensors(splits, f"data {cfg.describe()}")
    return Dataset(config=cfg, x=xs, y=ys, num_classes=num_classes)


def sample_batches(n: int, batch_size: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` batches as from one shuffled pass over ``n`` samples (reshuffling if it runs out)."""
    if n <= 0 or batch_size <= 0 or count < 0:
        raise ConfigError(f"cannot sample {count} batches of {batch_size} from {n} samples")
    size = min(batch_size, n)
    order = rng.permutation(n)
    while len(order) < size * count:
        order = np.concatenate([order, rng.permutation(n)])
    return [order[i * size:(i + 1) * size] for i in range(count)]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One training epoch's batches (the last, partial one dropped), fixed by (seed, epoch).

    Deriving the order from the epoch, not from a running RNG, lets an interrupted run resume
    on exactly the batches it would have seen.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    size = min(batch_size, n)
    return [order[i:i + size] for i in range(0, n - size + 1, size)]
