"""Training that records its trajectory."""

from .loop import TrainResult, initial_state, lr_at, train
from .recipe import TrainConfig
from .run import train_from_args

__all__ = ["TrainConfig", "TrainResult", "initial_state", "lr_at", "train", "train_from_args"]
