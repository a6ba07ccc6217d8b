"""Your own data: a function named by import path, or splits handed to the Python API.

The contract. The data function (``--data mypkg.data:load --data-arg n=20000``) is called with
the ``--data-arg`` values as keyword arguments, torch seeded with 0, and returns a mapping with
the keys ``train``, ``val`` and ``test``. Each value is either

* an ``(inputs, labels)`` pair: ``inputs`` a float tensor (or array) ``(N, *input_shape)``, or an
  integer one such as token ids ``(N, L)`` (kept as int64, never cast to float), ``labels``
  integers ``0..C-1`` of shape ``(N,)``; or
* a ``torch.utils.data.Dataset`` whose items are ``(input, label)`` pairs; it is read into memory
  once.

An optional key ``num_classes`` states C; by default it is the largest label plus one. The inputs
are used as given (raytraj does not standardise them), and every process that calls the
function with the same arguments must get the same tensors: Ray workers and later commands call
it again instead of copying the data. The model may return logits, a dict or ``ModelOutput`` with
``logits``, or a tuple whose first tensor is the logits (see ``raytraj/models/outputs.py``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..config import ConfigError
from ..imports import call

SPLITS = ("train", "val", "test")  # every dataset's, user data functions' included


def call_data_function(path: str, args: dict | None) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return call(path, "data function", args)


def splits_to_tensors(splits: Any, what: str) -> tuple[dict, dict, int]:
    """Check ``splits`` against the contract above: (x per split, y per split, num_classes).

    Args:
        splits: what the data function returned (or what the Python API was given).
        what: names the data in errors.
    """
    if not isinstance(splits, Mapping):
        raise ConfigError(f"{what} returned a {type(splits).__name__}; it must return a mapping with keys "
                          "train, val, test")
    missing = [s for s in SPLITS if s not in splits]
    extra = sorted(set(splits) - set(SPLITS) - {"num_classes"})
    if missing or extra:
        raise ConfigError(f"{what}: the mapping has keys {sorted(map(str, splits))}; it needs train, val and test"
                          + (f" (and at most num_classes; unknown {extra})" if extra else ""))
    xs, ys = {}, {}
    for s in SPLITS:
        xs[s], ys[s] = _split(splits[s], f"{what}[{s!r}]")
    shapes = {s: tuple(xs[s].shape[1:]) for s in SPLITS}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"{what}: the splits' input shapes differ ({shapes}); every sample must have one shape")
    low = min(int(ys[s].min()) for s in SPLITS)
    high = max(int(ys[s].max()) for s in SPLITS)
    if low < 0:
        raise ConfigError(f"{what}: labels must be class indices 0..C-1, but the smallest is {low}")
    num_classes = splits.get("num_classes", high + 1)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"{what}: num_classes must be an integer >= 2, got {num_classes!r}")
    if high >= num_classes:
        raise ConfigError(f"{what}: labels must be below num_classes={num_classes}, but the largest is {high}")
    return xs, ys, num_classes


def _split(value: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(value, torch.utils.data.Dataset):
        try:
            items = [value[i] for i in range(len(value))]
        except TypeError as e:
            raise ConfigError(f"{where}: a Dataset must have a length and integer indexing ({e})") from e
        if not items or not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
            raise ConfigError(f"{where}: Dataset items must be (input, label) pairs")
        try:
            x = torch.stack([torch.as_tensor(it[0]) for it in items])
        except RuntimeError as e:
            raise ConfigError(f"{where}: Dataset inputs differ in shape ({e})") from e
        y = torch.as_tensor([int(it[1]) for it in items])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in value)
    else:
        raise ConfigError(f"{where} is a {type(value).__name__}; give an (inputs, labels) pair or a torch Dataset")
    if x.dtype == torch.bool or x.is_complex():
        raise ConfigError(f"{where}: inputs must be floating point, or integers such as token ids; got {x.dtype}")
    if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1:
        raise ConfigError(f"{where}: labels must be a 1-D integer tensor, got {tuple(y.shape)} {y.dtype}")
    if x.dim() < 2 or len(x) != len(y):
        raise ConfigError(f"{where}: inputs {tuple(x.shape)} and labels {tuple(y.shape)} must have one sample "
                          "axis of the same length")
    if len(y) == 0:
        raise ConfigError(f"{where} is empty")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ConfigError(f"{where}: inputs hold NaN or Inf")
    # Floats become float32; integers (token ids, indices into an nn.Embedding) stay integers, as int64.
    x = x.detach().float() if x.is_floating_point() else x.detach().long()
    return x.contiguous(), y.detach().long().contiguous()
