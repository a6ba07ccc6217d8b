"""The permutation spec: which tensor axes move together when hidden units are permuted.

It is plain data in the Git Re-Basin shape:

* ``axes``:   tensor name -> one entry per axis: a group name, ``None`` (never permuted), or a
  *segmented* entry ``(outer, inner)``, or more parts ``(g1, g2, ..., gk)``;
* ``groups``: group name  -> [(tensor name, axis), ...], derived from ``axes``;
* ``shapes``: tensor name -> shape, so group sizes are known and inputs can be checked.

A segmented axis of length n_outer * n_inner is read as n_outer contiguous blocks of n_inner units
(attention heads of head_dim dims): ``outer`` permutes whole blocks, ``inner`` permutes the units
inside every block, the same way in each block. Along it, new[b * n_inner + j] =
old[perm[outer][b] * n_inner + perm[inner][j]]. Multi-head attention allows a different
within-head permutation per head; the shared one is a subgroup of that, so it is always correct,
and it keeps every group a plain permutation of range(n). Group sizes are read off plain axes, off
``group_sizes``, or off a segmented axis whose other parts' sizes are known. A part may be None:
``(heads, None)`` permutes whole heads and leaves the dims inside them in place (what rotary
position embeddings allow for q and k).

More parts nest the same way, row-major: a fused q/k/v projection of width 3 * heads * head_dim
is ``(None, heads, dims)``, three fixed blocks (q, k, v), each of ``heads`` blocks of ``dims``.
At most one part may be None, so that every part's size can be read off the others.

A spec covers parameters *and* buffers (BatchNorm running stats move with their channels).
Every constructor checks coverage: each tensor has one entry per axis, and every axis of a
group has the same length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

Axes = tuple  # tuple[str | None | tuple[str | None, ...], ...]


def is_segmented(entry) -> bool:
    """Whether one axis entry is a tuple of parts, ``(outer, inner)`` or more, rather than a group name or None."""
    return isinstance(entry, tuple)


def axis_groups(entry) -> tuple[str, ...]:
    """The group names one axis entry carries: none, one, or a segmented axis's parts."""
    if entry is None:
        return ()
    return tuple(g for g in entry if g is not None) if is_segmented(entry) else (entry,)


class SpecError(ValueError):
    """A spec, or tensors given against a spec, that do not fit together."""


@dataclass(frozen=True)
class PermutationSpec:
    """Which axes of which tensors move together: the permutation symmetry of a model, as plain data.

    Each tensor's axes name a group (the axis moves with every other axis of that group), None
    (it stays), or a segmented ``(outer, inner)`` pair (H x d units: ``outer`` moves whole
    blocks, ``inner`` the units inside every block; None for a part that stays), or more parts
    nested row-major, such as ``(None, heads, dims)`` for a fused q/k/v axis. Checked for
    coverage when built; ``infer_spec`` derives one from a model, ``from_axes`` takes a
    hand-written one.

    Args:
        axes: tensor name -> one entry per axis.
        shapes: tensor name -> shape.
        unpermuted: why inference left axes unpermuted (reasons, for the record).
        group_sizes: sizes of groups that appear only on segmented axes (e.g. heads).
    """

    axes: Mapping[str, Axes]
    shapes: Mapping[str, tuple[int, ...]]
    # Human-readable reasons for axes that inference left unpermuted (empty for hand-written specs).
    unpermuted: tuple[str, ...] = field(default=(), compare=False)
    # Sizes of groups that sit only on segmented axes and cannot be read off them (e.g. heads).
    group_sizes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        axes = {name: tuple(_entry(e, name) for e in a) for name, a in self.axes.items()}
        shapes = {name: tuple(int(n) for n in s) for name, s in self.shapes.items()}
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "group_sizes", {g: int(n) for g, n in self.group_sizes.items()})
        if set(axes) != set(shapes):
            raise SpecError(
                f"spec names disagree: axes without shapes {sorted(set(axes) - set(shapes))}, "
                f"shapes without axes {sorted(set(shapes) - set(axes))}"
            )
        sizes: dict[str, int] = {}
        where: dict[str, str] = {}
        groups: dict[str, list[tuple[str, int]]] = {}

        def settle(group, n, at):
            if sizes.setdefault(group, n) != n:
                raise SpecError(f"group {group!r} has size {sizes[group]} at {where[group]} but size {n} at {at}")
            where.setdefault(group, at)

        segmented = []
        for name, entry in axes.items():
            shape = shapes[name]
            if len(entry) != len(shape):
                raise SpecError(f"{name}: spec lists {len(entry)} axes but the tensor has shape {shape}")
            for axis, group in enumerate(entry):
                for g in axis_groups(group):
                    groups.setdefault(g, []).append((name, axis))
                if is_segmented(group):
                    named = [g for g in group if g is not None]
                    if len(set(named)) < len(named):
                        raise SpecError(f"{name} axis {axis}: the parts of a segmented axis must be different "
                                        f"groups, got {group!r}")
                    if len(group) - len(named) > 1:
                        raise SpecError(f"{name} axis {axis}: a segmented axis may hold one None part, got "
                                        f"{group!r}")
                    segmented.append((name, axis, group))
                elif group is not None:
                    settle(group, shape[axis], f"{name} axis {axis}")
        for g, n in self.group_sizes.items():
            settle(g, n, "group_sizes")
        # A segmented axis fixes its one unknown part's size once the others are known: settle to a fixpoint.
        todo = segmented
        while todo:
            left = []
            for name, axis, parts in todo:
                n = shapes[name][axis]
                unknown = [g for g in parts if g is None or g not in sizes]
                if len(unknown) > 1:
                    left.append((name, axis, parts))
                    continue
                known = math.prod(sizes[g] for g in parts if g is not None and g in sizes)
                if n % known or (not unknown and n != known):
                    raise SpecError(
                        f"{name} axis {axis} has length {n}, which groups "
                        f"{[g for g in parts if g in sizes]} of sizes {[sizes[g] for g in parts if g in sizes]} "
                        "do not divide into blocks"
                    )
                if unknown and unknown[0] is not None:
                    settle(unknown[0], n // known, f"{name} axis {axis}")
            if len(left) == len(todo):
                unknown = sorted({g for _, _, e in left for g in e if g is not None and g not in sizes})
                raise SpecError(
                    f"the sizes of groups {unknown} cannot be read off the tensors; give them in group_sizes"
                )
            todo = left
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_sizes", sizes)

    # -- derived views -------------------------------------------------------------------------
    @property
    def groups(self) -> dict[str, list[tuple[str, int]]]:
        """group -> [(tensor name, axis)], in tensor order."""
        return self._groups  # type: ignore[attr-defined]

    @property
    def sizes(self) -> dict[str, int]:
        """group -> number of units it permutes."""
        return self._sizes  # type: ignore[attr-defined]

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_axes(
        cls,
        axes: Mapping[str, Iterable],
        tensors: Mapping[str, torch.Tensor],
        group_sizes: Mapping[str, int] | None = None,
    ):
        """A hand-written spec, with shapes read off ``tensors`` (e.g. a model's state_dict).

        Args:
            axes: tensor name -> per-axis entries: a group name, None, or (outer, inner).
            tensors: the tensors the spec covers, for their shapes.
            group_sizes: sizes of groups that appear only on segmented axes, such as heads.
        """
        missing = sorted(set(axes) - set(tensors))
        if missing:
            raise SpecError(f"spec names tensors that are not given: {missing}")
        return cls(axes={k: tuple(v) for k, v in axes.items()}, shapes={k: tuple(tensors[k].shape) for k in axes},
                   group_sizes=dict(group_sizes or {}))

    def to_dict(self) -> dict:
        return {
            "axes": {k: [list(e) if is_segmented(e) else e for e in v] for k, v in self.axes.items()},
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "unpermuted": list(self.unpermuted),
            "group_sizes": dict(self.group_sizes),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "PermutationSpec":
        unknown = set(d) - {"axes", "shapes", "unpermuted", "group_sizes"}
        if unknown:
            raise SpecError(f"unknown keys in spec dict: {sorted(unknown)}")
        return cls(axes=d["axes"], shapes=d["shapes"], unpermuted=tuple(d.get("unpermuted", ())),
                   group_sizes=d.get("group_sizes", {}))

    def unsegmented(self) -> "PermutationSpec":
        """The same symmetry on tensors whose segmented axes are split into their parts: (..., n_outer, n_inner, ...).

        Every entry of the result is plain, so code written for plain axes (matching's cached
        contractions) serves segmented specs unchanged; :meth:`split_shape` gives the reshape.
        """
        axes = {}
        shapes = {}
        for name, entry in self.axes.items():
            axes[name] = tuple(g for e in entry for g in (e if is_segmented(e) else (e,)))
            shapes[name] = self.split_shape(name)
        return PermutationSpec(axes=axes, shapes=shapes, unpermuted=self.unpermuted)

    def split_shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` with each segmented axis split into its parts' sizes."""
        out: list[int] = []
        for n, e in zip(self.shapes[name], self.axes[name]):
            out += segment_sizes(e, n, self.sizes) if is_segmented(e) else [n]
        return tuple(out)

    # -- checks --------------------------------------------------------------------------------
    def check_tensors(self, tensors: Mapping[str, torch.Tensor], *, complete: bool = False, what: str = "tensors"):
        """Raise a SpecError unless ``tensors`` fit the spec: known names and matching shapes.

        With ``complete``, every tensor of the spec must be present too (a model's state_dict).
        """
        unknown = [k for k in tensors if k not in self.axes]
        if unknown:
            raise SpecError(
                f"{what} hold names the permutation spec does not know: {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''}; was the spec built for another model?"
            )
        if complete:
            missing = [k for k in self.axes if k not in tensors]
            if missing:
                raise SpecError(
                    f"{what} lack tensors the permutation spec covers: {missing[:5]}"
                    f"{' ...' if len(missing) > 5 else ''}; was the spec built for another model?"
                )
        for name, t in tensors.items():
            if tuple(t.shape) != self.shapes[name]:
                raise SpecError(
                    f"{what}: {name} has shape {tuple(t.shape)} but the spec expects {self.shapes[name]}; "
                    "was the spec built for another model or width?"
                )

    def check_perm(self, perm: Mapping[str, torch.Tensor]):
        """Raise a SpecError unless ``perm`` has one valid index permutation per group."""
        if set(perm) != set(self.sizes):
            raise SpecError(
                f"permutation groups {sorted(perm)} do not match the spec's groups {sorted(self.sizes)}"
            )
        for group, idx in perm.items():
            n = self.sizes[group]
            if idx.shape != (n,) or not torch.equal(torch.sort(idx.cpu()).values, torch.arange(n)):
                raise SpecError(f"permutation of group {group!r} is not a permutation of range({n})")

    def conflicts(self) -> dict[str, set[str]]:
        """group -> the other groups that share a tensor with it (their solves interact)."""
        out: dict[str, set[str]] = {g: set() for g in self.sizes}
        for entry in self.axes.values():
            present = {g for e in entry for g in axis_groups(e)}
            for g in present:
                out[g] |= present - {g}
        return out

    def summary(self) -> str:
        lines = [f"{len(self.sizes)} groups over {len(self.axes)} tensors"]
        for g, members in self.groups.items():
            roles = {n: self.axes[n] for n, _ in members}
            lines.append(f"  {g} [{self.sizes[g]}]: " + ", ".join(
                f"{n}:{a}" + ("" if not is_segmented(roles[n][a]) else _part_label(roles[n][a], g))
                for n, a in members))
        for note in self.unpermuted:
            lines.append(f"  unpermuted: {note}")
        return "\n".join(lines)


def segment_sizes(entry: tuple, length: int, sizes: Mapping[str, int]) -> list[int]:
    """The sizes of a segmented axis's parts, row-major; a None part takes what the others leave."""
    known = math.prod(sizes[g] for g in entry if g is not None)
    return [sizes[g] if g is not None else length // known for g in entry]


def _part_label(entry: tuple, group: str) -> str:
    at = entry.index(group)
    if len(entry) == 2:
        return "(blocks)" if at == 0 else "(within)"
    return f"(part {at + 1} of {len(entry)})"


def _entry(e, name: str):
    """One axis entry normalised: None, a group name, or a tuple of parts (from JSON lists too)."""
    if e is None or isinstance(e, str):
        return e
    if (isinstance(e, (tuple, list)) and len(e) >= 2 and all(g is None or isinstance(g, str) for g in e)
            and any(g is not None for g in e)):
        return tuple(e)
    raise SpecError(f"{name}: an axis entry must be a group name, None or a tuple of two or more parts (group "
                    f"names, one may be None), got {e!r}")
