"""Recorded trajectories: the Arrow store, and actual or linear views of it."""

from .recorder import TrajectoryRecorder
from .schedule import SCHEDULES, lambdas
from .store import SCHEMA_VERSION, TrajectoryError, TrajectoryStore, TrajectoryWriter, is_store, parse_ref, read_state
from .view import ActualTrajectory, LinearTrajectory, Trajectory, open_trajectory

__all__ = [
    "ActualTrajectory", "LinearTrajectory", "SCHEDULES", "SCHEMA_VERSION", "Trajectory", "TrajectoryError",
    "TrajectoryRecorder", "TrajectoryStore", "TrajectoryWriter", "is_store", "lambdas", "open_trajectory", "parse_ref",
    "read_state",
]
