"""The permutation spec: which tensor axes move together when hidden units are permuted.

It is plain data in the Git Re-Basin shape:

* ``axes``:   tensor name -> one entry per axis, a group name or ``None`` (never permuted);
* ``groups``: group name  -> [(tensor name, axis), ...], derived from ``axes``;
* ``shapes``: tensor name -> shape, so group sizes are known and inputs can be checked.

A spec covers parameters *and* buffers (BatchNorm running stats move with their channels).
Every constructor checks coverage: each tensor has one entry per axis, and every axis of a
group has the same length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

Axes = tuple  # tuple[str | None, ...]


class SpecError(ValueError):
    """A spec, or tensors given against a spec, that do not fit together."""


@dataclass(frozen=True)
class PermutationSpec:
    axes: Mapping[str, Axes]
    shapes: Mapping[str, tuple[int, ...]]
    # Human-readable reasons for axes that inference left unpermuted (empty for hand-written specs).
    unpermuted: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        axes = {name: tuple(a) for name, a in self.axes.items()}
        shapes = {name: tuple(int(n) for n in s) for name, s in self.shapes.items()}
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "shapes", shapes)
        if set(axes) != set(shapes):
            raise SpecError(
                f"spec names disagree: axes without shapes {sorted(set(axes) - set(shapes))}, "
                f"shapes without axes {sorted(set(shapes) - set(axes))}"
            )
        sizes: dict[str, int] = {}
        groups: dict[str, list[tuple[str, int]]] = {}
        for name, entry in axes.items():
            shape = shapes[name]
            if len(entry) != len(shape):
                raise SpecError(f"{name}: spec lists {len(entry)} axes but the tensor has shape {shape}")
            for axis, group in enumerate(entry):
                if group is None:
                    continue
                if sizes.setdefault(group, shape[axis]) != shape[axis]:
                    first = groups[group][0]
                    raise SpecError(
                        f"group {group!r} has size {sizes[group]} at {first[0]} axis {first[1]} "
                        f"but size {shape[axis]} at {name} axis {axis}"
                    )
                groups.setdefault(group, []).append((name, axis))
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
    def from_axes(cls, axes: Mapping[str, Iterable[str | None]], tensors: Mapping[str, torch.Tensor]):
        """A hand-written spec, with shapes read off ``tensors`` (e.g. a model's state_dict)."""
        missing = sorted(set(axes) - set(tensors))
        if missing:
            raise SpecError(f"spec names tensors that are not given: {missing}")
        return cls(axes={k: tuple(v) for k, v in axes.items()}, shapes={k: tuple(tensors[k].shape) for k in axes})

    def to_dict(self) -> dict:
        return {
            "axes": {k: list(v) for k, v in self.axes.items()},
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "unpermuted": list(self.unpermuted),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "PermutationSpec":
        unknown = set(d) - {"axes", "shapes", "unpermuted"}
        if unknown:
            raise SpecError(f"unknown keys in spec dict: {sorted(unknown)}")
        return cls(axes=d["axes"], shapes=d["shapes"], unpermuted=tuple(d.get("unpermuted", ())))

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
            present = {g for g in entry if g is not None}
            for g in present:
                out[g] |= present - {g}
        return out

    def summary(self) -> str:
        lines = [f"{len(self.sizes)} groups over {len(self.axes)} tensors"]
        for g, members in self.groups.items():
            lines.append(f"  {g} [{self.sizes[g]}]: " + ", ".join(f"{n}:{a}" for n, a in members))
        for note in self.unpermuted:
            lines.append(f"  unpermuted: {note}")
        return "\n".join(lines)
