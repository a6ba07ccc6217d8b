"""Models that are not in the zoo: a factory function named by import path, with JSON kwargs.

``FactoryConfig("mypkg.nets:make_net", {"width": 512})`` travels like a zoo config (as
``{"name": "factory", "factory": ..., "kwargs": ...}``), so a store recorded from a user's own
training loop can be transferred by ``raytraj transfer`` or by Ray workers that import the same
package. The factory must return an ``nn.Module``; raytraj seeds torch before calling it, so a
seed gives the same init in every process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..config import ConfigError
from ..imports import call, is_import_path

FACTORY = "factory"


@dataclass(frozen=True)
class FactoryConfig:
    factory: str = ""  # package.module:function
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not is_import_path(self.factory):
            raise ConfigError(f"model factory {self.factory!r} is not an import path; write package.module:function")
        if not isinstance(self.kwargs, dict):
            raise ConfigError(f"model kwargs must be a mapping, got {type(self.kwargs).__name__}")
        try:
            # Round-tripped through JSON now, so that what a store records is what the factory got.
            object.__setattr__(self, "kwargs", json.loads(json.dumps(self.kwargs)))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model kwargs of {self.factory} must be JSON values (numbers, strings, lists, "
                              f"dicts): {e}") from e

    def describe(self) -> str:
        return self.factory + (f"({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})" if self.kwargs else "")


def build_factory_model(cfg: FactoryConfig, seed: int) -> nn.Module:
    """Call the factory with torch seeded by ``seed`` (the caller's RNG streams are left as they were)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = call(cfg.factory, "model factory", cfg.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {cfg.describe()} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
