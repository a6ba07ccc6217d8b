"""raytraj: transfer the learning trajectories of neural networks, on one machine or a Ray cluster.

Data flows one way: train -> trajectory store -> transfer -> evaluate. The subpackages hold
each stage (``raytraj.train.train``, ``raytraj.transfer.transfer``; ``raytraj.transfer_model`` is
the Python API of a transfer on models and data as objects); the Ray layer
(``raytraj.distributed``, ``raytraj.tune``) is imported only when used.

Every public name is imported from its module on first use (``raytraj.lazy``), so that
``import raytraj`` and ``raytraj --help`` do not load torch.
"""

__version__ = "0.1.0"

from .lazy import lazy_exports

_NAMES = {
    **dict.fromkeys(["DataConfig", "Dataset", "load_data"], ".data"),
    **dict.fromkeys(["build_model", "config_for_data", "logits_of", "model_config"], ".models"),
    **dict.fromkeys(["PairBank", "PermutationSpec", "apply_permutation", "check_spec", "infer_spec", "match",
                     "random_permutation"], ".perm"),
    **dict.fromkeys(["TrainConfig", "train_from_args"], ".train"),
    **dict.fromkeys(["TrajectoryRecorder", "TrajectoryStore", "TrajectoryWriter", "lambdas", "open_trajectory"],
                    ".trajectory"),
    **dict.fromkeys(["ENSEMBLE_RECIPES", "EnsembleRecipe"], ".recipes"),
    "TransferConfig": ".transfer.config",
    **dict.fromkeys(["TransferResult", "transfer_model"], ".transfer.api"),
    "RayConfig": ".ray_config",
    "finetune": ".transfer.finetune",
    # importing these imports Ray
    "RayBackend": ".distributed",
    **dict.fromkeys(["run_ensemble", "run_sweep", "distill"], ".tune"),
    # loss-landscape and alignment analysis (`raytraj analyze`); pure torch
    **dict.fromkeys(["barrier", "interpolate_models", "plane_landscape", "trajectory_similarity", "transfer_report"],
                    ".analysis"),
    "RunFolder": ".runfolder",  # a transfer run folder's files
}
_SUBPACKAGES = ("analysis", "data", "distributed", "models", "perm", "train", "trajectory", "transfer", "tune")

__getattr__, __dir__ = lazy_exports(__name__, _NAMES, _SUBPACKAGES)
__all__ = sorted(_NAMES)
