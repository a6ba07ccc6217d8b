"""Loss-landscape and alignment analysis: interpolation, the plane through three models, and the
similarity of two trajectories (paper Fig. 3 and 7), plus a one-page report of transfer runs.

Functions are named apart from their modules (``interpolate_models`` in ``interpolate.py``) so that
neither shadows the other. Pure torch: the ``ray`` backend lives in ``raytraj.distributed.grid`` and
is imported only when asked for.
"""

from .align import align_weights
from .grid import GridEvaluator, evaluate_points, loss_and_accuracy
from .interpolate import barrier, interpolate_models
from .models import AnalysisError, ModelRef, load_model
from .plane import PlaneBasis, plane_landscape
from .report import transfer_report
from .similarity import cosine, displacement_similarity, trajectory_similarity

__all__ = [
    "AnalysisError", "GridEvaluator", "ModelRef", "PlaneBasis", "align_weights", "barrier", "cosine",
    "displacement_similarity", "evaluate_points", "interpolate_models", "load_model", "loss_and_accuracy",
    "plane_landscape", "trajectory_similarity", "transfer_report",
]
