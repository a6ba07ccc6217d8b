"""What a trajectory store says about its model and data, with the caller's overrides.

A store made by ``raytraj train`` or by a ``TrajectoryRecorder`` given a factory and a data
reference names both, so any later command can rebuild them. A recorder store may lack one
(``--model`` / ``--data`` then supply it), and a user may point a store at their own copy of
the data; the model must in any case have exactly the store's tensors.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from .config import ConfigError
from .data import DataConfig, Dataset, dataset_from_splits, fingerprint, load_data, parse_data
from .models import build_model, logits_of, model_to_dict


def model_of(store, override=None):
    """The model config to use with ``store``: ``override`` (a config, or a module for the Python API),
    or the one the store records; checked tensor by tensor against the store."""
    if override is None:
        override = store.model_config()
    check_model_fits(override, store)
    return override


def describe_model(cfg) -> dict | str:
    """A JSON record of a model config (a module passed to the Python API is named by its class)."""
    if isinstance(cfg, nn.Module):
        return {"name": "module", "class": f"{type(cfg).__module__}.{type(cfg).__qualname__}"}
    return model_to_dict(cfg)


def check_model_fits(cfg, store) -> None:
    """ConfigError unless the model has the store's tensors, with the store's shapes."""
    state = build_model(cfg, 0).state_dict()
    shapes = store.shapes
    missing = [k for k in shapes if k not in state]
    extra = [k for k in state if k not in shapes]
    bad = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or extra or bad:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                 "wrong shapes " + ", ".join(f"{k} {tuple(state[k].shape)} vs {shapes[k]}" for k in bad[:3])
                 if bad else ""]
        name = cfg.get("name") if isinstance(cfg, Mapping) else getattr(cfg, "factory", type(cfg).__name__)
        raise ConfigError(f"model {name} does not match the store {store.location} ("
                          + "; ".join(p for p in parts if p)
                          + "); use the model and model options it was recorded with")


def data_of(store, override=None) -> Dataset:
    """The data to use with ``store``: ``override`` (a Dataset, a DataConfig, a data string, or splits),
    or the data the store records."""
    if isinstance(override, Dataset):
        return override
    if isinstance(override, (str, DataConfig)):
        return load_data(override)
    if override is not None:
        return dataset_from_splits(override)
    data = load_data(store.data_config())
    check_same_data(store, data)
    return data


def check_same_data(store, data: Dataset) -> None:
    """The data loaded now for the store's own data reference must be the data it was recorded on
    (``data_fingerprint``, recorded by `raytraj train`); --data names other data explicitly."""
    recorded = store.meta.get("data_fingerprint")
    if not recorded:
        return
    now = fingerprint(data)
    if now["sha256"] == recorded.get("sha256"):
        return
    shapes = [f"{s} {tuple(recorded['shapes'][s])} -> {tuple(now['shapes'][s])}" for s in now["shapes"]
              if recorded.get("shapes", {}).get(s) != now["shapes"][s]]
    what = "shapes " + ", ".join(shapes) if shapes else f"same shapes, other values (hash {recorded.get('sha256')} -> {now['sha256']})"
    raise ConfigError(f"the data {data.config.describe()} loaded now differs from what {store.location} was recorded "
                      f"on ({what}): the data changed, or its data function returns other tensors on each call "
                      "(it must not). Pass --data explicitly to use other data")


def data_config(text: str | None, args: dict | None) -> DataConfig | None:
    """``--data`` and ``--data-arg`` as a DataConfig (None when neither is given)."""
    if text is None:
        if args:
            raise ConfigError("--data-arg goes with --data package.module:function")
        return None
    cfg = parse_data(text)
    if args:
        if cfg.source != "import":
            raise ConfigError(f"--data-arg goes with a data function (package.module:function), not with {text!r}")
        cfg = DataConfig(source="import", path=cfg.path, args=dict(args))
    return cfg


def check_model_takes_data(cfg, data: Dataset) -> None:
    """One forward pass on a few training inputs, so that a model/data mismatch is one clear line."""
    model = build_model(cfg, 0).eval()
    x = data.x["train"][:4]
    name = cfg.factory if getattr(cfg, "factory", None) else (
        cfg.get("name") if isinstance(cfg, Mapping) else type(cfg).__name__)
    try:
        with torch.no_grad():
            out = logits_of(model(x))
    except Exception as e:  # the user's forward; any failure means these inputs do not fit it
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"model {name} cannot take the data's inputs of shape {tuple(x.shape)} "
                          f"({type(e).__name__}: {msg}); check the data function or the model options") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        raise ConfigError(f"model {name} must return logits (batch, classes); it returned "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if out.shape[1] < data.num_classes:
        raise ConfigError(f"model {name} outputs {out.shape[1]} classes but the data has labels up to "
                          f"{data.num_classes - 1}; set the model's class count (e.g. --model-arg num_classes="
                          f"{data.num_classes})")
