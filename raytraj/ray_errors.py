"""The user's own exception inside the wrappers Ray and Tune put around it (no Ray import here)."""

from __future__ import annotations

from .config import ConfigError


def root_cause(error: BaseException) -> BaseException:
    """``error``, or the exception a Ray task, actor or Tune trial raised, when ``error`` wraps one.

    Ray re-raises a worker's exception as ``RayTaskError`` holding the original as ``.cause``,
    usually as a class deriving from both (``as_instanceof_cause``) whose text is the worker's
    whole traceback; Tune keeps a failed trial's error the same way. The CLI maps the original
    (an ``OSError``, a ``ConfigError``) to its one-line message.
    """
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException) or not type(error).__module__.startswith("ray."):
            break
        error = cause
    return error


def describe(error: BaseException) -> str:
    """One line for a trial's error: the root cause's first line, after its class unless it is
    raytraj's own ConfigError (whose messages name the problem and the fix)."""
    cause = root_cause(error)
    lines = str(cause).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(cause, ConfigError) and first else f"{type(cause).__name__}: {first}".rstrip(": ")
