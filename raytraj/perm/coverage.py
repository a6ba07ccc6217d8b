"""How much of a model a permutation spec moves: tensors and hidden axes permuted against permutable.

A transfer can only differ from Naive through the axes its spec permutes. A spec that permutes
nothing makes FGMT cost gradients and return Naive; one that permutes a tenth of the model
transfers a tenth of it. ``spec_coverage`` measures this, and the transfer refuses a matching
method below a share the user sets (``TransferConfig.min_coverage``) unless forced.

Two counts:

* **tensors**: parameters and buffers with at least one permuted axis, against all floating-point
  ones with an axis longer than 1 (scalars and integer buffers such as ``num_batches_tracked``
  or a relative-position index hold no units);
* **hidden axes**: permuted axes against the axes a permutation could move, read off each
  tensor's module: a Linear's or Conv's output and input axes (not its kernel's spatial axes),
  an Embedding's feature axis (not its vocabulary), every axis of a norm's or an attention
  module's tensors, and the last axis of any other tensor (class tokens, position embeddings,
  layer scales). The model's own input features and output classes are fixed by the data and
  labels, so a Linear/Conv axis left unpermuted whose length is the input's feature count or the
  output's class count does not count as permutable.

The hidden-axes count is a reference measure from module types, independent of inference; the
tensors count is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

from .spec import PermutationSpec, axis_groups


@dataclass(frozen=True)
class Coverage:
    tensors: int  # tensors with an axis longer than 1
    tensors_permuted: int
    axes: int  # hidden axes a permutation could move
    axes_permuted: int
    names_unpermuted: tuple[str, ...] = ()  # tensors with no permuted axis

    @property
    def share(self) -> float:
        """The share of tensors permuted (1.0 for a model without tensors)."""
        return self.tensors_permuted / self.tensors if self.tensors else 1.0

    @property
    def axes_share(self) -> float:
        return min(1.0, self.axes_permuted / self.axes) if self.axes else 1.0

    def line(self) -> str:
        return (f"{self.tensors_permuted} of {self.tensors} tensors permuted ({100 * self.share:.0f}%), "
                f"{self.axes_permuted} of {self.axes} hidden axes ({100 * self.axes_share:.0f}%)")


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.MultiheadAttention):
        return "all"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":  # HF GPT-2's Conv1D: (in, out)
        return "linear"
    if "norm" in type(module).__name__.lower():
        return "all"
    return "last"


def _candidate_axes(kind: str, local: str, shape: tuple[int, ...]) -> list[int]:
    if kind == "embedding":
        return [1] if local == "weight" and len(shape) == 2 else list(range(len(shape)))[-1:]
    if kind == "conv":
        return [0, 1] if local == "weight" else [0]
    if kind in ("linear", "all"):
        return list(range(len(shape)))
    return [len(shape) - 1] if shape else []


def spec_coverage(spec: PermutationSpec, model: nn.Module | None = None, fixed: Iterable[int] = ()) -> Coverage:
    """Tensors and hidden axes ``spec`` permutes (see the module's definitions).

    Args:
        spec: the permutation spec.
        model: the module the spec is for; without it every axis longer than 1 counts as hidden.
        fixed: lengths fixed by the data: the input's feature (channel) count and the output's class count.
    """
    owner: dict[str, tuple[str, str]] = {}
    indices: set[str] = set()  # integer buffers (index tables, counters) hold no units
    if model is not None:
        indices = {k for k, v in model.state_dict().items() if not (v.is_floating_point() or v.is_complex())}
        for mname, module in model.named_modules():
            prefix = f"{mname}." if mname else ""
            for local, _ in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                owner.setdefault(prefix + local, (_kind(module), local))
    boundary = set(fixed)
    tensors = permuted = axes = axes_permuted = 0
    unpermuted = []
    for name, entry in spec.axes.items():
        shape = spec.shapes[name]
        if name in indices or not any(n > 1 for n in shape):
            continue
        tensors += 1
        moved = [a for a, e in enumerate(entry) if axis_groups(e)]
        if moved:
            permuted += 1
        else:
            unpermuted.append(name)
        kind, local = owner.get(name, ("all" if model is None else "last", name.rsplit(".", 1)[-1]))
        for a in _candidate_axes(kind, local, shape):
            if shape[a] <= 1:
                continue
            if a in moved:
                axes += 1
                axes_permuted += 1
            elif not (kind in ("linear", "conv") and shape[a] in boundary):
                axes += 1
        # a permuted axis outside the reference candidates still counts as moved
        extra = [a for a in moved if a not in _candidate_axes(kind, local, shape)]
        axes += len(extra)
        axes_permuted += len(extra)
    return Coverage(tensors, permuted, axes, axes_permuted, tuple(unpermuted))
