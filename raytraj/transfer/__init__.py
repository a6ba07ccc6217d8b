"""Learning transfer: GMT, FGMT, Naive and Oracle, behind a backend interface.

``transfer`` runs a transfer into a run folder (what ``raytraj transfer`` does);
``transfer_model`` is the Python API on models and data as objects (also ``raytraj.transfer_model``).
Names are imported on first use (``raytraj.lazy``): the CLI reads TransferConfig's defaults without
loading torch and scipy.
"""

from ..lazy import lazy_exports

_NAMES = {
    **dict.fromkeys(["TransferResult", "transfer_model"], ".api"),
    **dict.fromkeys(["Backend", "GradRequest", "Handle", "Matcher"], ".backend"),
    "RunCheckpointer": ".checkpointing",
    **dict.fromkeys(["METHODS", "TransferConfig"], ".config"),
    "run_transfer": ".engine",
    **dict.fromkeys(["LocalBackend", "LocalMatcher"], ".local"),
    **dict.fromkeys(["Problem", "prepare"], ".problem"),
    **dict.fromkeys(["load_run_config", "make_backend", "transfer"], ".run"),
    "TransferState": ".state",
    **dict.fromkeys(["TransferWorker", "bn_batches_for", "grad_batches_for"], ".worker"),
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
