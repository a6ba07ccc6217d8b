"""The processes a run started are gone after it is SIGKILLed: checked in the process table."""

import os
import signal
import subprocess
import sys
import time

import pytest

from raytraj.watchdog import _alive, _stat, descendants

PY = [sys.executable, "-m", "raytraj"]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _gone(tree: dict, timeout: float = 30) -> list[int]:
    """The pids of ``tree`` still alive after ``timeout`` seconds (empty when all are gone)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = [p for p, s in tree.items() if _alive(p, s)]
        if not left:
            return []
        time.sleep(0.2)
    return left


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the watchdog reads /proc")
def test_children_of_a_sigkilled_process_are_ended(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\nfrom raytraj.watchdog import watch\n"
                               "watch()\nc = subprocess.Popen([sys.executable, '-c', "
                               "'import subprocess, time; subprocess.Popen([\"sleep\", \"600\"]); time.sleep(600)'])\n"
                               "print('up', flush=True)\ntime.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "up"
    deadline = time.time() + 20
    tree = {}
    while time.time() < deadline and not any("sleep 600" in _cmdline(p) for p in tree):
        tree = {p: s for p, s in descendants(parent.pid).items() if "watchdog.py" not in _cmdline(p)}
        time.sleep(0.2)
    assert len(tree) == 2, tree  # the child and its grandchild (sleep)
    time.sleep(3.0)  # the watchdog polls twice a second (after its start-up, slow on a busy machine)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _gone(tree, 20) == []


@pytest.mark.slow
def test_ray_processes_of_a_sigkilled_driver_are_gone(digits_source, tmp_path):
    out = tmp_path / "run"
    driver = subprocess.Popen([*PY, "transfer", "--source", str(digits_source / "source"), "--target-seed", "5",
                               "--method", "fgmt", "--steps", "400", "--eval-every", "0", "--quiet", "--backend", "ray",
                               "--workers", "1", "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "state" / "progress.safetensors").exists():
        assert driver.poll() is None, "the transfer ended before it could be killed"
        time.sleep(0.2)
    time.sleep(1.0)
    tree = {p: s for p, s in descendants(driver.pid).items() if "watchdog.py" not in _cmdline(p)}
    names = " ".join(_cmdline(p) for p in tree)
    assert "raylet" in names and "gcs_server" in names, names  # the driver's own local Ray instance
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    left = _gone(tree, 60)
    assert left == [], [(_cmdline(p), _stat(p)) for p in left]
