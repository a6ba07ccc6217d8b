"""Job submission for real: `ray start --head` on 127.0.0.1 with Ray's default token auth, then
`ray job submit --working-dir . -- raytraj transfer ...`, as the README shows."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Ray jobs: the end-to-end tier

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    dash = free_port()
    ports = {f"--{flag}": free_port() for flag in (
        "port", "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port")}
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats",
           *[f"{k}={v}" for k, v in ports.items()]]
    log = tmp_path_factory.mktemp("head") / "head.log"
    # A session of its own: teardown signals exactly the processes this head started.
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # it answers (token auth may refuse the anonymous call): it is up
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail(f"ray head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    # /api/version answers before the job agent does; a submit in between fails. Wait for the
    # Jobs API itself to answer an authenticated call.
    while True:
        listed = subprocess.run([RAY, "job", "list", "--address", url], env=env, capture_output=True, text=True,
                                timeout=60)
        if listed.returncode == 0:
            break
        if time.time() > deadline or proc.poll() is not None:
            pytest.fail(f"the job agent did not come up:\n{listed.stderr[-2000:]}\n{log.read_text()[-3000:]}")
        time.sleep(1)
    yield url, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left after the grace period
    except ProcessLookupError:
        pass


def test_submitted_transfer_job_writes_the_same_result_as_a_local_run(head, digits_source, tmp_path):
    from raytraj.transfer import TransferConfig, transfer

    url, env = head
    out = tmp_path / "job-out"
    # The job runs with this venv's interpreter, not whatever `python` is first on the PATH.
    submit = [RAY, "job", "submit", "--address", url, "--working-dir", ".", "--",
              sys.executable, "-m", "raytraj", "transfer", "--source", str(digits_source / "source"),
              "--target-seed", "2", "--method", "fgmt", "--steps", "4", "--seed", "1", "--out", str(out),
              "--backend", "ray", "--workers", "2", "--quiet"]
    done = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "ray" and metrics["method"] == "fgmt"
    local = transfer(str(digits_source / "source"), str(tmp_path / "local"), TransferConfig(method="fgmt", steps=4,
                     seed=1), target_seed=2, progress=False)
    assert metrics["val_acc"] == local["val_acc"]


def test_the_cli_needs_token_auth_against_this_cluster(head):
    url, env = head
    plain = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    listed = subprocess.run([RAY, "job", "list", "--address", url], env=env, capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    refused = subprocess.run([RAY, "job", "list", "--address", url], env={**plain, "RAY_AUTH_MODE": "disabled"},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
