"""Learning transfer: GMT, FGMT, Naive and Oracle, behind a backend interface.

The package is also callable: ``raytraj.transfer(source=..., target=..., data=..., config=...)``
is :func:`raytraj.transfer.api.transfer_model`, the Python API, while ``raytraj.transfer.transfer``
stays the run-folder function the CLI uses. Names are imported on first use (``raytraj.lazy``):
the CLI reads TransferConfig's defaults without loading torch and scipy.
"""

import sys
import types

from ..lazy import lazy_exports

_NAMES = {
    **dict.fromkeys(["Backend", "Done", "GradRequest", "LocalBackend", "finish_sums"], ".backend"),
    "RunCheckpointer": ".checkpointing",
    **dict.fromkeys(["METHODS", "TransferConfig"], ".config"),
    **dict.fromkeys(["TransferState", "run_transfer", "solve_seed"], ".engine"),
    **dict.fromkeys(["TransferResult", "transfer_model"], ".api"),
    **dict.fromkeys(["Problem", "prepare"], ".problem"),
    **dict.fromkeys(["load_run_config", "make_backend", "transfer"], ".run"),
    **dict.fromkeys(["TransferWorker", "bn_batches_for", "grad_batches_for"], ".worker"),
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)


class _CallablePackage(types.ModuleType):
    """``raytraj.transfer`` is both this package and, called, the Python API (the issue's spelling)."""

    def __call__(self, *args, **kwargs):
        from .api import transfer_model

        return transfer_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
