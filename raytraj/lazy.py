"""Public names a package re-exports, imported from their modules on first use (PEP 562).

``import raytraj`` and the CLI's argument parsing must not pay for torch, pyarrow and scipy
(seconds of CPU) before a command needs them: ``raytraj --help`` and a mistyped option answer at
once. Each package lists its public names and the module holding them; ``from raytraj import X``
and ``raytraj.X`` work as before and import X's module the first time.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_exports(package: str, names: dict[str, str], submodules: tuple[str, ...] = ()
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> the relative module that defines it (``".store"``).
        submodules: subpackages reachable as attributes, as an eager ``import`` made them
            (``raytraj.perm.match`` after ``import raytraj``).
    """

    def __getattr__(name: str):
        if name in submodules:
            return importlib.import_module(f".{name}", package)  # the import sets the attribute
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        setattr(sys.modules[package], name, value)  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names) | set(submodules))

    return __getattr__, __dir__
