"""Learning transfer: GMT, FGMT, Naive and Oracle, behind a backend interface.

``transfer`` runs a transfer into a run folder (what ``raytraj transfer`` does);
``transfer_model`` is the Python API on models and data as objects (also ``raytraj.transfer_model``).
"""

from .api import TransferResult, transfer_model
from .backend import Backend, GradRequest, Handle, Matcher
from .checkpointing import RunCheckpointer
from .config import METHODS, TransferConfig
from .engine import run_transfer
from .local import LocalBackend, LocalMatcher
from .problem import Problem, prepare
from .run import load_run_config, make_backend, transfer
from .state import TransferState
from .worker import TransferWorker, bn_batches_for, grad_batches_for

__all__ = [
    "Backend", "GradRequest", "Handle", "LocalBackend", "LocalMatcher", "METHODS", "Matcher", "Problem",
    "RunCheckpointer", "TransferConfig", "TransferResult", "TransferState", "TransferWorker", "bn_batches_for",
    "grad_batches_for", "load_run_config", "make_backend", "prepare", "run_transfer", "transfer", "transfer_model",
]
