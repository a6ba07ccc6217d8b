"""Ray Tune on top of transfers: ensembles from one trajectory, distillation, and sweeps."""

from .distill import distill
from .ensemble import run_ensemble
from .sweep import SWEEPABLE, format_results, parse_params, run_sweep

__all__ = ["SWEEPABLE", "distill", "format_results", "parse_params", "run_ensemble", "run_sweep"]
