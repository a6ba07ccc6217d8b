"""RayConfig: the Ray backend's typed options, checked when built, without importing Ray."""

import subprocess
import sys

import pytest

from raytraj import RayConfig
from raytraj.config import ConfigError


def test_defaults_and_fields():
    c = RayConfig()
    assert (c.workers, c.cpus_per_worker, c.gpus_per_worker, c.address, c.placement_timeout_s, c.max_recoveries) == \
        (2, 1, 0, None, 600, 3)
    assert RayConfig(workers=3, gpus_per_worker=0.5, address="auto").workers == 3


@pytest.mark.parametrize("kw,says", [
    ({"workers": 0}, "RayConfig.workers (--workers) must be a whole number >= 1, got 0"),
    ({"workers": 1.5}, "RayConfig.workers (--workers) must be a whole number >= 1, got 1.5"),
    ({"workers": None}, "RayConfig.workers (--workers) must be set, got None"),
    ({"cpus_per_worker": 0}, "RayConfig.cpus_per_worker (--cpus-per-worker) must be a finite number > 0"),
    ({"cpus_per_worker": float("inf")}, "RayConfig.cpus_per_worker (--cpus-per-worker) must be a finite number > 0"),
    ({"gpus_per_worker": -1}, "RayConfig.gpus_per_worker (--gpus-per-worker) must be a finite number >= 0"),
    ({"placement_timeout_s": 0}, "RayConfig.placement_timeout_s (--placement-timeout) must be a finite number > 0"),
    ({"max_recoveries": -1}, "RayConfig.max_recoveries must be a whole number >= 0, got -1"),
    ({"workers": "2"}, "RayConfig.workers (--workers) must be a whole number >= 1, got '2'"),
    ({"address": 5}, "address must be a string"),
])
def test_bad_values_fail_when_built_in_one_line(kw, says):
    with pytest.raises(ConfigError) as e:
        RayConfig(**kw)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_cli_builds_it_without_importing_ray(tmp_path):
    code = ("import sys\nfrom raytraj import cli\n"
            "try:\n    cli.main(['transfer', '--source', 's', '--target-seed', '2', '--method', 'fgmt', '--out', 'o', '--backend', 'ray', "
            "'--workers', '0'])\nexcept SystemExit as e:\n    assert e.code == 2, e.code\n"
            "assert 'ray' not in sys.modules, 'imported ray'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == ("raytraj transfer: error: RayConfig.workers (--workers) must be a "
                                                  "whole number >= 1, got 0")
