"""Weight matching one model onto another (Git Re-Basin), with the spec inferred and checked."""

from __future__ import annotations

from typing import Mapping

import torch

from ..data import Dataset
from ..models import build_model, model_from_dict
from ..perm import PermutationSpec, apply_permutation, match


def checked_spec(model: dict, data: Dataset) -> PermutationSpec:
    from ..transfer.problem import infer_checked_spec

    return infer_checked_spec(model_from_dict(model), data)


def align_weights(model: dict, data: Dataset, reference: Mapping[str, torch.Tensor],
                  other: Mapping[str, torch.Tensor], *, seed: int = 0,
                  spec: PermutationSpec | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """``other`` permuted to maximise <reference, pi(other)> over its parameters.

    Buffers (BatchNorm statistics) move with their units. Returns the permuted state and the
    solver's info.

    Args:
        model: model config dict.
        data: gives the example input that spec inference traces with.
        reference: the state to align to.
        other: the state to permute.
        seed: the solver's group order.
        spec: a spec already inferred for ``model`` (inferred and checked when None).
    """
    spec = spec or checked_spec(model, data)
    params = [n for n, _ in build_model(model_from_dict(model), 0).named_parameters()]
    perm, info = match(spec, [({k: reference[k] for k in params}, {k: other[k] for k in params})], seed=seed)
    return apply_permutation(spec, perm, dict(other)), info
