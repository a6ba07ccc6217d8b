"""Permutation symmetry: specs, permutations, spec inference and checking, and matching."""

from .apply import (
    Permutation,
    apply_permutation,
    compose_permutations,
    identity_permutation,
    invert_permutation,
    perm_from_lists,
    perm_to_lists,
    random_permutation,
)
from .check import SpecCheckError, check_spec
from .coloring import color_groups
from .descent import Costs, SolveOptions, solve
from .infer import SpecInferenceError, SpecInferenceWarning, infer_spec
from .lap import lap_solver, solve_laps_auction, solve_laps_serial
from .matching import BankCosts, PairBank, match
from .spec import PermutationSpec, SpecError

__all__ = [
    "BankCosts",
    "Costs",
    "PairBank",
    "Permutation",
    "PermutationSpec",
    "SolveOptions",
    "SpecCheckError",
    "SpecError",
    "SpecInferenceError",
    "SpecInferenceWarning",
    "apply_permutation",
    "check_spec",
    "color_groups",
    "compose_permutations",
    "identity_permutation",
    "infer_spec",
    "invert_permutation",
    "lap_solver",
    "match",
    "perm_from_lists",
    "perm_to_lists",
    "random_permutation",
    "solve",
    "solve_laps_auction",
    "solve_laps_serial",
]
