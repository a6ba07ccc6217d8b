"""Loss-landscape and alignment analysis: interpolation, the plane through three models, and the
similarity of two trajectories (paper Fig. 3 and 7), plus a one-page report of transfer runs.

Functions are named apart from their modules (``interpolate_models`` in ``interpolate.py``) so that
neither shadows the other. Pure torch: the ``ray`` backend lives in ``raytraj.distributed.grid`` and
is imported only when asked for. Names are imported on first use (``raytraj.lazy``), so that the
CLI's ``analyze`` parser (``analysis/cli.py``) costs no torch.
"""

from ..lazy import lazy_exports

_NAMES = {
    "align_weights": ".align",
    **dict.fromkeys(["GridEvaluator", "evaluate_points", "loss_and_accuracy"], ".grid"),
    **dict.fromkeys(["barrier", "interpolate_models"], ".interpolate"),
    **dict.fromkeys(["AnalysisError", "ModelRef", "load_model"], ".models"),
    **dict.fromkeys(["PlaneBasis", "plane_landscape"], ".plane"),
    "transfer_report": ".report",
    **dict.fromkeys(["cosine", "displacement_similarity", "trajectory_similarity"], ".similarity"),
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
