"""raytraj: transfer the learning trajectories of neural networks, on one machine or a Ray cluster.

Data flows one way: train -> trajectory store -> transfer -> evaluate. The subpackages hold
each stage (``raytraj.train.train``, ``raytraj.transfer.transfer``; ``raytraj.transfer_model`` is
the Python API of a transfer on models and data as objects); the Ray layer
(``raytraj.distributed``, ``raytraj.tune``) is imported only when used.
"""

__version__ = "0.1.0"

from .data import DataConfig, Dataset, load_data
from .models import build_model, config_for_data, model_config
from .perm import (
    PairBank,
    PermutationSpec,
    apply_permutation,
    check_spec,
    infer_spec,
    match,
    random_permutation,
)
from .train import TrainConfig, train_from_args
from .trajectory import TrajectoryRecorder, TrajectoryStore, TrajectoryWriter, lambdas, open_trajectory
from .recipes import ENSEMBLE_RECIPES, EnsembleRecipe
from .ray_config import RayConfig
from .transfer import TransferConfig, TransferResult, transfer_model
from .transfer.finetune import finetune

_RAY = {"RayBackend": "distributed", "run_ensemble": "tune", "run_sweep": "tune", "distill": "tune"}


def __getattr__(name):
    if name in _RAY:  # importing these imports Ray
        import importlib

        return getattr(importlib.import_module(f".{_RAY[name]}", __name__), name)
    raise AttributeError(f"module 'raytraj' has no attribute {name!r}")


__all__ = [
    "DataConfig", "Dataset", "ENSEMBLE_RECIPES", "EnsembleRecipe", "PairBank", "PermutationSpec", "TrainConfig", "TrajectoryRecorder", "TrajectoryStore",
    "TrajectoryWriter",
    "RayConfig", "TransferConfig", "TransferResult", "apply_permutation", "build_model", "check_spec", "config_for_data", "finetune", "infer_spec",
    "lambdas", "load_data", "match", "model_config", "open_trajectory", "random_permutation", "train_from_args",
    "transfer_model",
    *_RAY,
]

# Loss-landscape and alignment analysis (`raytraj analyze`); pure torch, like the rest above.
from .analysis import barrier, interpolate_models, plane_landscape, trajectory_similarity, transfer_report  # noqa: E402

__all__ += ["barrier", "interpolate_models", "plane_landscape", "trajectory_similarity", "transfer_report"]

from .runfolder import RunFolder  # noqa: E402  (a transfer run folder's files)

__all__ += ["RunFolder"]
