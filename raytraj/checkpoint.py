"""Tensors plus a JSON record in one safetensors file, written atomically.

Used for resumable state (optimiser momentum, a transfer's cached gradient pairs) and for
saved models. safetensors never unpickles, so loading a file from elsewhere is safe.
"""

from __future__ import annotations

import json
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import fs

_KEY = "raytraj"


class CheckpointError(ValueError):
    """A checkpoint file that is missing or damaged."""


def save_checkpoint(location: str, tensors: Mapping[str, torch.Tensor], info: dict | None = None) -> None:
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                   metadata={_KEY: json.dumps(info or {})})
    fs.atomic_write_bytes(location, data)


def load_checkpoint(location: str) -> tuple[dict[str, torch.Tensor], dict]:
    if not fs.exists(location):
        raise CheckpointError(f"{location} does not exist")
    raw = fs.read_bytes(location)
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + header_len]).get("__metadata__") or {}
        info = json.loads(meta.get(_KEY, "{}"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{location} is truncated or corrupt ({e}); delete it to start over") from e
    return tensors, info
