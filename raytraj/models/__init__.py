"""The model zoo: each model is built from a typed config and a seed, with deterministic init.

Every zoo model names its classifier ``head``, which ``--new-head`` re-initialises.
A config travels as a plain dict ``{"name": ..., **fields}`` (in trajectory stores and run folders).
A model outside the zoo is a ``FactoryConfig``: an import path and JSON kwargs (see factory.py).
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..config import ConfigError, from_dict, to_dict
from .conv import ConvConfig, ConvNet
from .conv1d import Conv1dConfig, Conv1dNet
from .factory import FACTORY, FactoryConfig, build_factory_model
from .mlp import MLP, MLPConfig
from .outputs import logits_of
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
    if type(cfg) is FactoryConfig:
        return FACTORY
    for name, (cfg_cls, _) in MODELS.items():
        if type(cfg) is cfg_cls:
            return name
    raise ConfigError(f"{type(cfg).__name__} is not a zoo model config")


def model_config(name: str, **fields: Any):
    """The typed config of zoo model ``name``, or of factory ``name``; unknown fields raise ConfigError.

    Args:
        name: a zoo model (``mlp``, ``conv``, ``resnet20``, ``conv1d``, ``transformer``) or a factory's
            import path ``package.module:function``.
        fields: the config's fields (a factory's keyword arguments).

    Returns:
        the model's config dataclass (a ``FactoryConfig`` for a factory).
    """
    if ":" in name:
        return FactoryConfig(name, dict(fields))
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or your own factory "
                          "package.module:function")
    cfg = from_dict(MODELS[name][0], fields, what=f"model {name!r} config")
    _check_sizes(name, cfg)
    return cfg


# Fields that hold indices, not sizes: 0 is a valid value.
_INDEX_FIELDS = ("pool_after",)


def _check_sizes(name: str, cfg) -> None:
    """Widths, counts and scale factors must be positive: torch would fail later with a RuntimeError."""
    for key, value in to_dict(cfg).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        low = 0 if key in _INDEX_FIELDS else 1
        if key == "width":
            bad = [v for v in values if not v > 0]
        else:
            bad = [v for v in values if v < low]
        if bad:
            shown = json.dumps(list(value)).replace(" ", "") if isinstance(value, (list, tuple)) else value
            raise ConfigError(f"model {name!r} option {key}={shown}: every value must be "
                              f"{'> 0' if key == 'width' else f'>= {low}'}, got {bad[0]}")


def model_to_dict(cfg) -> dict[str, Any]:
    return {"name": model_name(cfg), **to_dict(cfg)}


def rebuildable(record: Mapping[str, Any] | None) -> bool:
    """Whether a recorded model can be rebuilt by :func:`model_from_dict`: a zoo model or a factory,
    not a module passed as it was (recorded by its class name alone, ``{"name": "module"}``)."""
    return (record or {}).get("name") not in (None, "module")


def model_from_dict(data: Mapping[str, Any]):
    data = dict(data)
    if "name" not in data:
        raise ConfigError("model config has no 'name'")
    name = data.pop("name")
    if name == FACTORY:
        return from_dict(FactoryConfig, data, what="model factory config")
    return model_config(name, **data)


def architecture(model: Mapping[str, Any]) -> str:
    """What must agree for two stores' models to share a trajectory: the zoo name or the factory path."""
    return model["factory"] if model.get("name") == FACTORY else model.get("name", "?")


def config_for_data(name: str, input_shape: tuple[int, ...], num_classes: int, /, **overrides: Any):
    """A config of zoo model ``name`` sized for inputs of ``input_shape``.

    Args:
        name: a zoo model or a factory's import path (which sizes itself from its kwargs).
        input_shape: one sample's shape, no batch dim (e.g. ``(1, 8, 8)``).
        num_classes: the classifier's outputs.
        overrides: further config fields, e.g. ``hidden=[64]``.

    Returns:
        the model's config dataclass.
    """
    shape = tuple(input_shape)
    if ":" in name:  # a factory sizes itself from its own kwargs
        return model_config(name, **overrides)
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
    """A fresh model; the same config and seed give the same weights, whatever the global RNG.

    Args:
        cfg: a model config (or its dict), or an ``nn.Module`` (the Python API's template), copied.
        seed: seeds the init (the caller's random state is left as it was).

    Returns:
        the model, on the CPU.
    """
    if isinstance(cfg, nn.Module):
        import copy

        return copy.deepcopy(cfg)
    if isinstance(cfg, Mapping):
        cfg = model_from_dict(cfg)
    if isinstance(cfg, FactoryConfig):
        return build_factory_model(cfg, seed)
    cls = MODELS[model_name(cfg)][1]
    check_fits_in_memory(cls, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(cfg)


class _SkipRandomInit(torch.overrides.TorchFunctionMode):
    """Random in-place inits (``normal_``, ``uniform_``, ...) as no-ops: on the meta device torch runs them
    through its Python decompositions, whose first call imports torch._dynamo (about 1.3 CPU s of every
    transfer's and training's start-up, measured) only to fill tensors that hold no values."""

    _RANDOM = frozenset({"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "geometric_",
                         "log_normal_", "cauchy_"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self._RANDOM and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


def check_fits_in_memory(cls: type[nn.Module], cfg) -> None:
    """Refuse a zoo model whose parameters and buffers alone exceed the memory this machine has
    free, before allocating them: built on the ``meta`` device, it costs no memory, and the
    message names the size (torch would fail with its allocator's error, or the kernel kill it)."""
    from ..runtime import available_memory, gib

    with torch.device("meta"), _SkipRandomInit():
        shell = cls(cfg)
    tensors = [*shell.parameters(), *shell.buffers()]
    need = sum(t.numel() * t.element_size() for t in tensors)
    free = available_memory()
    if free is not None and need > free:
        numel = sum(t.numel() for t in tensors)
        raise ConfigError(f"model {model_name(cfg)} ({describe_config(cfg)}) needs {gib(need)} for its {numel:,} "
                          f"parameters alone, more than the {gib(free)} of memory free here; choose smaller "
                          "widths or depth (--model-arg)")


def describe_config(cfg) -> str:
    """The fields of a zoo config that differ from its defaults: ``hidden=[100000]``."""
    defaults = to_dict(type(cfg)())
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in to_dict(cfg).items() if v != defaults.get(k)) or "defaults"


def reinit_head(model: nn.Module, seed: int, head_name: str = HEAD) -> None:
    """Re-initialise the classifier head in place, seeded (the pre-trained scenario's new head).

    Args:
        model: the model whose head is reset.
        seed: seeds the new head's init.
        head_name: the head's module name (dotted for a nested one, e.g. ``classifier.2``).
    """
    try:
        head = model.get_submodule(head_name)
    except AttributeError:
        head = None
    if head is None:
        names = [n for n, m in model.named_modules() if n and next(m.children(), None) is None][-3:]
        raise ConfigError(f"{type(model).__name__} has no module {head_name!r} to re-initialise; name the "
                          f"classifier with --head-module (its last modules are {names})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in head.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


__all__ = [
    "FACTORY", "FactoryConfig", "HEAD", "MODELS", "architecture",
    "MLP", "MLPConfig", "ConvConfig", "ConvNet", "ResNet20", "ResNet20Config",
    "Conv1dConfig", "Conv1dNet", "build_model", "config_for_data", "model_config", "model_from_dict",
    "model_name", "model_to_dict", "reinit_head",
]
