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
