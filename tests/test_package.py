"""Package layout contracts: the public API, and algorithms that never import Ray."""

import subprocess
import sys


def test_algorithms_do_not_import_ray():
    code = ("import sys, raytraj, raytraj.perm, raytraj.transfer, raytraj.trajectory, raytraj.train, raytraj.cli; "
            "raytraj.transfer.transfer; assert 'ray' not in sys.modules, sorted(m for m in sys.modules if "
            "m.startswith('ray.'))[:5]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_api_is_reexported():
    import raytraj
    from raytraj.perm import PermutationSpec, apply_permutation, check_spec, infer_spec, match, random_permutation

    assert raytraj.PermutationSpec is PermutationSpec and raytraj.match is match
    assert {f.__name__ for f in (apply_permutation, check_spec, infer_spec, random_permutation)} <= set(raytraj.__all__)
    assert raytraj.run_ensemble.__module__ == "raytraj.tune.ensemble"


def test_the_cli_parses_without_torch_scipy_pyarrow_or_ray():
    # `raytraj --help` and argument errors must answer at once (benchmarks/bench_startup.py times them)
    code = ("import sys, raytraj, raytraj.cli; raytraj.cli.build_parser(); "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'scipy', 'pyarrow', 'ray', 'numpy'}); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_lists_the_zoo():
    from raytraj.cli import ZOO
    from raytraj.models import MODELS

    assert list(ZOO) == list(MODELS)


def test_lazy_names_resolve_and_unknown_names_fail():
    import pytest

    import raytraj
    import raytraj.analysis
    import raytraj.train
    import raytraj.trajectory
    import raytraj.transfer

    for package in (raytraj, raytraj.analysis, raytraj.train, raytraj.trajectory, raytraj.transfer):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError):
            package.no_such_name
    assert raytraj.perm.match is raytraj.match  # subpackages reachable as attributes, as before


def test_every_public_name_documents_its_arguments():
    import inspect

    import raytraj

    missing = []
    for name in raytraj.__all__:
        obj = getattr(raytraj, name)  # the Ray names import Ray here: this checks them too
        if not callable(obj):
            continue  # constants (ENSEMBLE_RECIPES): documented where they are defined
        doc = inspect.getdoc(obj) or ""
        needs = ["Args:"] + (["Returns:"] if inspect.isfunction(obj) else [])  # a class: its constructor's
        missing += [f"{name}: {n}" for n in needs if n not in doc]
    assert not missing, missing


def test_transfer_has_one_meaning_and_all_lists_hold_only_public_names():
    import types

    import raytraj
    import raytraj.perm
    import raytraj.transfer

    assert isinstance(raytraj.transfer, types.ModuleType) and not callable(raytraj.transfer)
    assert raytraj.transfer_model is raytraj.transfer.transfer_model and "transfer_model" in raytraj.__all__
    for module in (raytraj, raytraj.perm, raytraj.transfer):
        private = [n for n in module.__all__ if n.startswith("_") or n in ("solve_seed", "finish_sums", "Done")]
        assert not private and all(hasattr(module, n) for n in module.__all__), (module.__name__, private)
