"""Learning transfer: GMT, FGMT, Naive and Oracle, behind a backend interface.

The package is also callable: ``raytraj.transfer(source=..., target=..., data=..., config=...)``
is :func:`raytraj.transfer.api.transfer_model`, the Python API, while ``raytraj.transfer.transfer``
stays the run-folder function the CLI uses.
"""

import sys
import types

from .backend import Backend, Done, GradRequest, LocalBackend, finish_sums
from .checkpointing import RunCheckpointer
from .config import METHODS, TransferConfig
from .engine import TransferState, run_transfer, solve_seed
from .api import TransferResult, transfer_model
from .problem import Problem, prepare
from .run import load_run_config, make_backend, transfer
from .worker import TransferWorker, bn_batches_for, grad_batches_for

__all__ = [
    "Backend", "Done", "GradRequest", "LocalBackend", "METHODS", "Problem", "RunCheckpointer", "TransferConfig",
    "TransferState", "TransferWorker", "bn_batches_for", "finish_sums", "grad_batches_for", "load_run_config",
    "make_backend", "prepare", "run_transfer", "solve_seed", "transfer", "TransferResult", "transfer_model",
]


class _CallablePackage(types.ModuleType):
    """``raytraj.transfer`` is both this package and, called, the Python API (the issue's spelling)."""

    def __call__(self, *args, **kwargs):
        return transfer_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
