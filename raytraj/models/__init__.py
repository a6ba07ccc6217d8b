"""The model zoo: each model is built from a typed config and a seed, with deterministic init.

Every zoo model names its classifier ``head``, which ``--new-head`` re-initialises.
A config travels as a plain dict ``{"name": ..., **fields}`` (in trajectory stores and run folders).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..config import ConfigError, from_dict, to_dict
from .conv import ConvConfig, ConvNet
from .conv1d import Conv1dConfig, Conv1dNet
from .mlp import MLP, MLPConfig
from .resnet import ResNet20, ResNet20Config
from .transformer import Transformer, TransformerConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLP),
    "conv": (ConvConfig, ConvNet),
    "resnet20": (ResNet20Config, ResNet20),
    "conv1d": (Conv1dConfig, Conv1dNet),
    "transformer": (TransformerConfig, Transformer),
}
HEAD = "head"


def model_name(cfg) -> str:
    for name, (cfg_cls, _) in MODELS.items():
        if type(cfg) is cfg_cls:
            return name
    raise ConfigError(f"{type(cfg).__name__} is not a zoo model config")


def model_config(name: str, **fields: Any):
    """The typed config of zoo model ``name``; unknown fields raise ConfigError."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return from_dict(MODELS[name][0], fields, what=f"model {name!r} config")


def model_to_dict(cfg) -> dict[str, Any]:
    return {"name": model_name(cfg), **to_dict(cfg)}


def model_from_dict(data: Mapping[str, Any]):
    data = dict(data)
    if "name" not in data:
        raise ConfigError("model config has no 'name'")
    return model_config(data.pop("name"), **data)


def config_for_data(name: str, input_shape: tuple[int, ...], num_classes: int, **overrides: Any):
    """A config of zoo model ``name`` sized for inputs of ``input_shape`` (no batch dim)."""
    shape = tuple(input_shape)
    if name == "mlp":
        sized = {"in_features": math.prod(shape)}
    elif name in ("conv", "resnet20"):
        if len(shape) != 3:
            raise ConfigError(f"model {name!r} needs image inputs (C, H, W), but the data has shape {shape}")
        sized = {"in_channels": shape[0]} | ({"input_size": min(shape[1:])} if name == "conv" else {})
    elif name == "conv1d":
        if len(shape) != 2:
            raise ConfigError(f"model 'conv1d' needs sequence inputs (C, L), but the data has shape {shape}")
        sized = {"in_channels": shape[0]}
    elif name == "transformer":
        if len(shape) not in (1, 2):
            raise ConfigError(f"model 'transformer' needs sequence inputs (C, L) or (L,), but the data has shape {shape}")
        sized = {"in_channels": 1 if len(shape) == 1 else shape[0], "seq_len": shape[-1]}
    else:
        return model_config(name)  # raises with the list of models
    return model_config(name, **{**sized, "num_classes": num_classes, **overrides})


def build_model(cfg, seed: int) -> nn.Module:
    """A fresh model; the same config and seed give the same weights, whatever the global RNG."""
    if isinstance(cfg, Mapping):
        cfg = model_from_dict(cfg)
    cls = MODELS[model_name(cfg)][1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg)


def reinit_head(model: nn.Module, seed: int) -> None:
    """Re-initialise the classifier head in place, seeded (the pre-trained scenario's new head)."""
    head = getattr(model, HEAD, None)
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no '{HEAD}' module to re-initialise")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in head.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


__all__ = [
    "HEAD", "MODELS", "MLP", "MLPConfig", "ConvConfig", "ConvNet", "ResNet20", "ResNet20Config",
    "Conv1dConfig", "Conv1dNet", "build_model", "config_for_data", "model_config", "model_from_dict",
    "model_name", "model_to_dict", "reinit_head",
]
