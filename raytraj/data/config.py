"""What data to use, as a typed config or a short string.

Grammar: ``NAME[:ARG][CLASSES]``

* ``digits``                  scikit-learn's bundled 8x8 handwritten digits
* ``mnist1d`` / ``mnist1d:200000``   MNIST-1D generated locally, with a sample count
* ``npz:PATH``                user arrays (x_train, y_train, and optionally x_test, y_test)
* ``cifar10:ROOT``            a torchvision dataset already on disk under ROOT (never downloaded)
* ``fashion-mnist`` / ``fashion-mnist:PATH`` / ``fashion-mnist:20000`` / ``fashion-mnist:PATH:20000``
                              Fashion-MNIST's idx files (Debian's dataset-fashion-mnist folder by default,
                              or a folder or URI), optionally a class-balanced subset of training images
* a class subset in brackets: ``digits[0-4]``, ``mnist1d[5-9]``, ``digits[0,3,5]``
* ``mypkg.data:load``         your own data function, called with ``args`` (see user.py for the contract)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import ConfigError
from ..imports import is_import_path

BUILTIN = ("digits", "mnist1d", "npz", "fashion-mnist")


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split; ``parse_data`` reads the CLI's strings into one.

    Args:
        source: ``digits``, ``mnist1d``, ``npz``, a torchvision dataset name, or ``import`` (a data function).
        path: the npz file, the torchvision root, or the data function's ``package.module:function``.
        num_samples: mnist1d's sample count (None: 20000).
        classes: a class subset, relabelled 0..k-1 in this order.
        val_fraction: the share of the training split held out for val.
        test_fraction: the share held out for test, for data without a test split of its own.
        split_seed: seeds the splits.
        args: a data function's keyword arguments.
    """

    source: str = "digits"
    path: str | None = None  # npz file, or torchvision root
    num_samples: int | None = None  # mnist1d (None means 20000); fashion-mnist's training subset (None: all)
    classes: tuple[int, ...] | None = None  # a class subset, relabelled 0..k-1 in this order
    val_fraction: float = 0.1  # of the training split
    test_fraction: float = 0.2  # only for data without its own test split
    split_seed: int = 777
    args: dict | None = None  # keyword arguments of a data function (source "import")

    def describe(self) -> str:
        if self.source == "import":
            return self.path + (f"({', '.join(f'{k}={v!r}' for k, v in self.args.items())})" if self.args else "")
        arg = "".join(f":{v}" for v in (self.path, self.num_samples) if v)
        cls = f"[{','.join(map(str, self.classes))}]" if self.classes else ""
        return f"{self.source}{arg}{cls}"


_PATTERN = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_-]*)(?::(?P<arg>[^\[\]]+))?(?:\[(?P<classes>[0-9,\- ]+)\])?$")


def parse_data(text: str) -> DataConfig:
    """``"mnist1d:20000[0-4]"`` -> DataConfig; malformed strings raise ConfigError with the grammar."""
    if _names_function(text.strip()):
        return DataConfig(source="import", path=text.strip())
    m = _PATTERN.match(text.strip())
    if not m:
        raise ConfigError(f"cannot parse data {text!r}; expected NAME[:ARG][CLASSES], e.g. digits[0-4], "
                          "mnist1d:20000, npz:/path/data.npz, cifar10:/data/root")
    name, arg, classes = m["name"].lower(), m["arg"], m["classes"]
    fields: dict = {"source": name}
    if name == "mnist1d" and arg:
        if not arg.isdigit() or int(arg) < 100:
            raise ConfigError(f"mnist1d sample count must be an integer >= 100, got {arg!r}")
        fields["num_samples"] = int(arg)
    elif name == "digits" and arg:
        raise ConfigError("digits takes no argument; use digits or digits[0-4]")
    elif name == "fashion-mnist" and arg:
        fields.update(_path_and_size(arg))
    elif name not in ("digits", "mnist1d", "fashion-mnist"):
        if not arg:
            raise ConfigError(f"data {name!r} needs a path: {name}:PATH")
        fields["path"] = arg
    if classes:
        fields["classes"] = _parse_classes(classes)
    return DataConfig(**fields)


def _path_and_size(arg: str) -> dict:
    """``PATH``, ``N`` or ``PATH:N`` (a trailing all-digit part is a size: URIs hold colons too)."""
    path, sep, size = arg.rpartition(":")
    if not (sep and size.isdigit()):
        path, size = ("", arg) if arg.isdigit() else (arg, "")
    if size and int(size) < 100:
        raise ConfigError(f"fashion-mnist size must be an integer >= 100, got {size!r}")
    return {k: v for k, v in (("path", path), ("num_samples", int(size) if size else None)) if v}


def _names_function(text: str) -> bool:
    """``pkg.mod:fn`` names a data function; ``cifar10:ROOT`` (a torchvision root) does not.

    A dotted module is always an import path. An undotted one is only when it is an importable
    module that is not a dataset name, so that a torchvision root named like a module still works.
    """
    if not is_import_path(text):
        return False
    module = text.split(":", 1)[0]
    if "." in module:
        return True
    if module.lower() in BUILTIN:
        return False
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _parse_classes(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise ConfigError(f"bad class range {part!r}; use LOW-HIGH, e.g. 0-4")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ConfigError(f"bad class {part!r}")
    if len(set(out)) != len(out) or len(out) < 2:
        raise ConfigError(f"a class subset needs at least two distinct classes, got {out}")
    return tuple(out)
