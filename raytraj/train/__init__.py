"""Training that records its trajectory.

Names are imported from their modules on first use (``raytraj.lazy``): the CLI reads TrainConfig's
defaults without loading torch.
"""

from ..lazy import lazy_exports

_NAMES = {
    **dict.fromkeys(["TrainResult", "initial_state", "lr_at", "train"], ".loop"),
    "TrainConfig": ".recipe",
    "train_from_args": ".run",
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
