"""Permutations as data: a dict group -> LongTensor of indices, and how they act on tensors.

Semantics follow Git Re-Basin: along every axis of group g, ``new[..., i, ...] = old[..., perm[g][i], ...]``,
so a permutation maps source units into target order.
"""

from __future__ import annotations

import math
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

    More parts nest row-major the same way. A None part stays in place; ``length`` is the axis length.
    """
    known = math.prod(len(perm[g]) for g in entry if g is not None)
    device = next(perm[g].device for g in entry if g is not None)
    index = torch.zeros(1, dtype=torch.long, device=device)
    for g in entry:
        part = perm[g].to(device) if g is not None else torch.arange(length // known, device=device)
        index = (index[:, None] * len(part) + part[None, :]).reshape(-1)
    return index


def invert_permutation(perm: Mapping[str, torch.Tensor]) -> Permutation:
    return {g: torch.argsort(p) for g, p in perm.items()}


def compose_permutations(outer: Mapping[str, torch.Tensor], inner: Mapping[str, torch.Tensor]) -> Permutation:
    """The permutation that applies ``inner`` first, then ``outer``."""
    return {g: inner[g][outer[g]] for g in outer}


def perm_to_lists(perm: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """JSON-friendly form, for metrics files and checkpoints."""
    return {g: p.tolist() for g, p in perm.items()}


def perm_from_lists(data: Mapping[str, list[int]], sizes: Mapping[str, int] | None = None,
                    where: str = "permutation") -> Permutation:
    """The JSON form read back (a run folder's perm.json, a transfer's saved progress), checked.

    Args:
        data: group -> list of indices.
        sizes: the groups and sizes it must have (e.g. the spec's); None checks only that every
            list is a permutation.
        where: names the data in the error, e.g. ``"runs/fgmt/perm.json 'best'"``.

    Raises:
        ConfigError: other groups than ``sizes``, a list of the wrong length, or one that is not a
            permutation of 0..n-1 (an edited or damaged file).
    """
    check_perm_lists(data, sizes, where)
    return {g: torch.tensor(v, dtype=torch.long) for g, v in data.items()}


def check_perm_lists(data, sizes: Mapping[str, int] | None = None, where: str = "permutation") -> None:
    """See :func:`perm_from_lists`; the same checks without building tensors."""
    from ..config import ConfigError

    fix = "the file was edited or damaged; run the transfer again"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} is a {type(data).__name__}, not a mapping of group to indices; {fix}")
    if sizes is not None and set(data) != set(sizes):
        missing, extra = sorted(set(sizes) - set(data)), sorted(set(data) - set(sizes))
        raise ConfigError(f"{where} has other groups than the model's permutation spec (missing {missing[:3]}, "
                          f"unknown {extra[:3]}); {fix}")
    for g, v in data.items():
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise ConfigError(f"{where}: group {g!r} is not a list of integer indices; {fix}")
        n = len(v) if sizes is None else sizes[g]
        if len(v) != n:
            raise ConfigError(f"{where}: group {g!r} has {len(v)} indices, but the group has {n} units; {fix}")
        if sorted(v) != list(range(n)):
            seen, dup = set(), None
            for i in v:
                if i in seen or not 0 <= i < n:
                    dup = i
                    break
                seen.add(i)
            why = f"index {dup} is out of range" if dup is not None and not 0 <= dup < n else f"index {dup} repeats"
            raise ConfigError(f"{where}: group {g!r} is not a permutation of 0..{n - 1} ({why}); {fix}")
