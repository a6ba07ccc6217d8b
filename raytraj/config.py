"""Typed dataclass configs that fail loudly on keys they do not know."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config with unknown keys or values of the wrong type."""


SEED_MAX = 2**63 - 1  # torch.manual_seed and numpy's generators take seeds up to here


def check_number(option: str, value, *, minimum: float | None = None, above: float | None = None,
                 integer: bool = False, maximum: float | None = None) -> None:
    """ConfigError unless ``value`` is a finite number (an integer if ``integer``) in range: at least
    ``minimum``, greater than ``above``, at most ``maximum``. ``None`` passes (an unset option)."""
    import math

    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
        integer and value != int(value))
    if not bad and minimum is not None and value < minimum:
        bad = True
    if not bad and above is not None and value <= above:
        bad = True
    if not bad and maximum is not None and value > maximum:
        bad = True
    if bad:
        rules = [r for r in (f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None
                             else "", f"<= {maximum}" if maximum is not None else "") if r]
        kind = "a whole number" if integer else "a finite number"
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        raise ConfigError(f"{option} must be {kind}{' ' + ' and '.join(rules) if rules else ''}, got {shown}")


def check_seed(option: str, value) -> None:
    check_number(option, value, minimum=0, maximum=SEED_MAX, integer=True)


def from_dict(cls: type[T], data: Mapping[str, Any], *, what: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and badly typed values raise ConfigError."""
    what = what or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{what}.{k}") for k, v in data.items()})


def to_dict(config) -> dict[str, Any]:
    """JSON-friendly dict of a dataclass config (tuples become lists)."""
    return dataclasses.asdict(config)


def replace(config: T, **changes) -> T:
    """``dataclasses.replace`` with the same loud checking as :func:`from_dict`."""
    return from_dict(type(config), {**to_dict(config), **changes}, what=type(config).__name__)


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value
