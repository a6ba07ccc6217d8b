"""Learning transfer: GMT, FGMT, Naive and Oracle, behind a backend interface."""

from .backend import Backend, Done, GradRequest, LocalBackend, finish_sums
from .checkpointing import RunCheckpointer
from .config import METHODS, TransferConfig
from .engine import TransferState, run_transfer, solve_seed
from .problem import Problem, prepare
from .run import load_run_config, make_backend, transfer
from .worker import TransferWorker, bn_batches_for, grad_batches_for

__all__ = [
    "Backend", "Done", "GradRequest", "LocalBackend", "METHODS", "Problem", "RunCheckpointer", "TransferConfig",
    "TransferState", "TransferWorker", "bn_batches_for", "finish_sums", "grad_batches_for", "load_run_config",
    "make_backend", "prepare", "run_transfer", "solve_seed", "transfer",
]
