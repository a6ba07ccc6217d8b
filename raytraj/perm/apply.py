"""Permutations as data: a dict group -> LongTensor of indices, and how they act on tensors.

Semantics follow Git Re-Basin: along every axis of group g, ``new[..., i, ...] = old[..., perm[g][i], ...]``,
so a permutation maps source units into target order.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .spec import PermutationSpec

Permutation = dict  # dict[str, torch.LongTensor]


def identity_permutation(spec: PermutationSpec) -> Permutation:
    return {g: torch.arange(n) for g, n in spec.sizes.items()}


def random_permutation(spec: PermutationSpec, generator: torch.Generator | None = None) -> Permutation:
    """One uniformly random permutation per group, drawn from ``generator`` in group order.

    Args:
        spec: the permutation spec.
        generator: torch's random generator (default: the global one).

    Returns:
        group -> a long tensor holding a permutation of ``range(size)``.
    """
    return {g: torch.randperm(n, generator=generator) for g, n in spec.sizes.items()}


def apply_permutation(
    spec: PermutationSpec, perm: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A new dict with every tensor permuted along its grouped axes.

    Args:
        spec: the permutation spec.
        perm: group -> permutation; ``new[..., i, ...] = old[..., perm[i], ...]`` on each grouped axis.
        state_dict: any subset of the spec's tensors (gradients have no buffers), each with the
            spec's shape.

    Returns:
        the permuted tensors, under the same names.
    """
    spec.check_tensors(state_dict, what="state_dict")
    spec.check_perm(perm)
    return {name: permute_tensor(t, spec.axes[name], perm) for name, t in state_dict.items()}


def permute_tensor(t: torch.Tensor, axes, perm: Mapping[str, torch.Tensor], skip_axis: int | None = None):
    """``t`` gathered along each grouped axis (except ``skip_axis``); unchecked, for hot loops."""
    for axis, group in enumerate(axes):
        if group is not None and axis != skip_axis:
            index = segmented_index(perm, group, t.shape[axis]) if isinstance(group, tuple) else perm[group]
            t = t.index_select(axis, index.to(t.device))
    return t


def segmented_index(perm: Mapping[str, torch.Tensor], entry: tuple, length: int) -> torch.Tensor:
    """The gather index of a segmented axis: new[b * d + j] = old[perm[outer][b] * d + perm[inner][j]].

    A None part of ``entry`` stays in place; ``length`` is the axis length, n_outer * d.
    """
    outer = perm[entry[0]] if entry[0] is not None else None
    inner = perm[entry[1]] if entry[1] is not None else None
    if outer is None:
        outer = torch.arange(length // len(inner), device=inner.device)
    if inner is None:
        inner = torch.arange(length // len(outer), device=outer.device)
    return (outer[:, None] * len(inner) + inner[None, :].to(outer.device)).reshape(-1)


def invert_permutation(perm: Mapping[str, torch.Tensor]) -> Permutation:
    return {g: torch.argsort(p) for g, p in perm.items()}


def compose_permutations(outer: Mapping[str, torch.Tensor], inner: Mapping[str, torch.Tensor]) -> Permutation:
    """The permutation that applies ``inner`` first, then ``outer``."""
    return {g: inner[g][outer[g]] for g in outer}


def perm_to_lists(perm: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """JSON-friendly form, for metrics files and checkpoints."""
    return {g: p.tolist() for g, p in perm.items()}


def perm_from_lists(data: Mapping[str, list[int]]) -> Permutation:
    return {g: torch.tensor(v, dtype=torch.long) for g, v in data.items()}
