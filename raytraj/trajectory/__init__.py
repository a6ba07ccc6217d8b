"""Recorded trajectories: the Arrow store, and actual or linear views of it.

Names are imported from their modules on first use (``raytraj.lazy``): the schedules are read by
the CLI's argument parser, which must not load pyarrow and torch.
"""

from ..lazy import lazy_exports

_NAMES = {
    "TrajectoryRecorder": ".recorder",
    **dict.fromkeys(["SCHEDULES", "lambdas"], ".schedule"),
    **dict.fromkeys(["SCHEMA_VERSION", "TrajectoryError", "TrajectoryStore", "TrajectoryWriter", "is_store",
                     "parse_ref", "read_state"], ".store"),
    **dict.fromkeys(["ActualTrajectory", "LinearTrajectory", "Trajectory", "open_trajectory"], ".view"),
}
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
__all__ = sorted(_NAMES)
