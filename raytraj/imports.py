"""User code named by an import path, ``package.module:attribute``.

Models, data and specs that are not part of raytraj are named this way on the command line and
in trajectory stores, so that any process (a Ray worker, a later ``raytraj transfer``) can
rebuild them from a string.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

from .config import ConfigError

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(text: str) -> bool:
    """True for ``module.sub:attr`` (the module part may be a top-level module: ``mymod:make``)."""
    return isinstance(text, str) and bool(_PATH.match(text))


def resolve(path: str, what: str) -> Any:
    """The object ``path`` names; ConfigError (one line) when it cannot be imported.

    Args:
        path: ``module.sub:attr`` or ``module.sub:Class.attr``.
        what: what the object is for, used in the error ("model factory", "data function").
    """
    if not is_import_path(path):
        raise ConfigError(f"{what} {path!r} is not an import path; write it as package.module:function")
    module_name, attr = path.split(":", 1)
    if os.getcwd() not in sys.path and "" not in sys.path:
        # As `python -m` would: the `raytraj` script does not put the current folder on the path.
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what} {path}: cannot import {module_name} ({e}); run from the folder holding it, install "
                          "it, or put its folder on PYTHONPATH (on Ray: --working-dir or --py-modules)") from e
    except Exception as e:  # the module's own code failed while importing
        raise ConfigError(f"{what} {path}: importing {module_name} raised {type(e).__name__}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {path}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def call(path: str, what: str, kwargs: dict | None = None) -> Any:
    """Resolve ``path`` and call it with ``kwargs``; an exception it raises becomes a ConfigError."""
    fn = resolve(path, what)
    if not callable(fn):
        raise ConfigError(f"{what} {path} is a {type(fn).__name__}, not a function")
    try:
        return fn(**(kwargs or {}))
    except Exception as e:
        args = ", ".join(f"{k}={v!r}" for k, v in (kwargs or {}).items())
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{what} {path}({args}) raised {type(e).__name__}: {msg}") from e
