"""What data to use, as a typed config or a short string.

Grammar: ``NAME[:ARG][CLASSES]``

* ``digits``                  scikit-learn's bundled 8x8 handwritten digits
* ``mnist1d`` / ``mnist1d:200000``   MNIST-1D generated locally, with a sample count
* ``npz:PATH``                user arrays (x_train, y_train, and optionally x_test, y_test)
* options after a comma: ``npz:PATH,n=5000,val=0.2``: ``n`` takes a seeded subset of N training
  samples (npz; MNIST-1D's size is ``mnist1d:N``), ``val`` and ``test`` set the fractions split
  off for val and, for data without a test split, test (defaults 0.1 and 0.2)
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
    num_samples: int | None = None  # mnist1d: samples generated (None: 20000); npz, fashion-mnist: a training subset
    classes: tuple[int, ...] | None = None  # a class subset, relabelled 0..k-1 in this order
    val_fraction: float = 0.1  # of the training split
    test_fraction: float = 0.2  # only for data without its own test split
    split_seed: int = 777
    args: dict | None = None  # keyword arguments of a data function (source "import")

    def describe(self) -> str:
        if self.source == "import":
            return self.path + (f"({', '.join(f'{k}={v!r}' for k, v in self.args.items())})" if self.args else "")
        size = self.num_samples if self.source in ("mnist1d", "fashion-mnist") else None  # npz's is an option
        arg = "".join(f":{v}" for v in (self.path, size) if v)
        cls = f"[{','.join(map(str, self.classes))}]" if self.classes else ""
        return f"{self.source}{arg}{_describe_options(self)}{cls}"


_PATTERN = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_-]*)(?::(?P<arg>[^\[\]]+))?(?:\[(?P<classes>[0-9,\- ]+)\])?$")


def parse_data(text: str) -> DataConfig:
    """``"mnist1d:20000[0-4]"`` -> DataConfig; malformed strings raise ConfigError with the grammar."""
    if _names_function(text.strip()):
        return DataConfig(source="import", path=text.strip())
    text, options = _split_options(text.strip())
    m = _PATTERN.match(text)
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
            if name != "npz" and not _torchvision_name(name):
                raise ConfigError(f"unknown data {text!r}; choose {KNOWN}")
            raise ConfigError(f"data {name!r} needs a path: {name}:PATH")
        fields["path"] = arg
    if classes:
        fields["classes"] = _parse_classes(classes)
    return DataConfig(**fields, **_check_options(name, options, fields))


# ``,KEY=VALUE`` options after NAME[:ARG], before a class subset: KEY -> DataConfig field
_OPTIONS = {"n": "num_samples", "val": "val_fraction", "test": "test_fraction"}
_DEFAULTS = {field: getattr(DataConfig, field) for field in ("val_fraction", "test_fraction")}
_OPTION = re.compile(r",(?P<key>[a-z]+)=(?P<value>[^,\[\]]*)$")


def _split_options(text: str) -> tuple[str, dict[str, str]]:
    """``"npz:/d.npz,n=500,val=0.2[0-4]"`` -> (``"npz:/d.npz[0-4]"``, {"n": "500", "val": "0.2"})."""
    classes = ""
    if text.endswith("]") and "[" in text:
        text, classes = text[:text.rindex("[")], text[text.rindex("["):]
    options: dict[str, str] = {}
    while (m := _OPTION.search(text)) and m["key"] in _OPTIONS:
        if m["key"] in options:
            raise ConfigError(f"data option {m['key']}= is given twice")
        options[m["key"]] = m["value"]
        text = text[:m.start()]
    if m := _OPTION.search(text):
        raise ConfigError(f"unknown data option {m['key']}=; the options are n= (npz samples), val= and test= "
                          "(fractions)")
    return text + classes, options


def _check_options(name: str, options: dict[str, str], fields: dict) -> dict:
    """The options as DataConfig fields, checked."""
    out: dict = {}
    for key, value in options.items():
        if key == "n":
            if name != "npz":
                raise ConfigError(f"n= takes a subset of an npz file's samples; {name} takes none"
                                  + (" (give MNIST-1D's size as mnist1d:N)" if name == "mnist1d" else ""))
            if not value.isdigit() or int(value) < 10:
                raise ConfigError(f"npz option n={value}: a sample count must be an integer >= 10")
            out["num_samples"] = int(value)
            continue
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not 0 < fraction < 1:
            raise ConfigError(f"data option {key}={value}: a fraction must be a number between 0 and 1, e.g. "
                              f"{key}={_DEFAULTS[_OPTIONS[key]]}")
        out[_OPTIONS[key]] = fraction
    val, test = ({**_DEFAULTS, **out}[f] for f in ("val_fraction", "test_fraction"))
    if val + test >= 1:
        raise ConfigError(f"data options val={val:g} and test={test:g} leave no training samples; lower them")
    return out


def _describe_options(cfg: DataConfig) -> str:
    """The options that differ from their defaults, as ``parse_data`` reads them back."""
    parts = [f",n={cfg.num_samples}" if cfg.num_samples and cfg.source == "npz" else ""]
    parts += [f",{key}={getattr(cfg, field):g}" for key, field in _OPTIONS.items()
              if field in _DEFAULTS and getattr(cfg, field) != _DEFAULTS[field]]
    return "".join(parts)


KNOWN = ("digits, digits[0-4], mnist1d[:N], npz:PATH, fashion-mnist[:PATH][:N], a torchvision dataset already on disk (e.g. cifar10:ROOT, "
         "fashionmnist:ROOT), or your data function package.module:function")


def _torchvision_name(name: str) -> bool:
    """Is ``name`` a torchvision dataset class (lower case)? False when torchvision is not installed."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        return False
    return any(k.lower() == name and isinstance(getattr(tvd, k), type) for k in dir(tvd))


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
