"""One test for NaN and inf in tensors, shared by the store, the matching and the saved models."""

from __future__ import annotations

from typing import Mapping

import torch


def is_finite(t: torch.Tensor) -> bool:
    """Integer tensors are always finite; floating ones must hold no NaN or inf."""
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def nonfinite_names(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding NaN or inf, in the mapping's order."""
    return [name for name, t in tensors.items() if not is_finite(t)]
