"""A real two-node Ray cluster: `ray start --head` and `ray start --address` as separate processes on
127.0.0.1. Ranks spread over both nodes give the local answer, and killing the worker node (its raylet
and every process of it, SIGKILL) while a step runs restarts the group on the head, from the last
step's checkpoint, with the uninterrupted run's result."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from raytraj.distributed import RayBackend
from raytraj.distributed.group import WorkerGroup
from raytraj.ray_config import RayConfig
from raytraj.transfer import TransferConfig, prepare, transfer

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(tmp, name, cpus, *args):
    """`ray start --block` in a session of its own, so the test can end exactly its processes."""
    ports = {f"--{flag}": free_port() for flag in (
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port")}
    cmd = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
           "--num-gpus=0", "--object-store-memory=100000000", f"--temp-dir={tmp / name}",
           *[f"{k}={v}" for k, v in ports.items()], *args]
    # A dead node is noticed after 3 missed health checks 0.5 s apart (Ray's default takes tens of seconds).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_health_check_period_ms": "500",
           "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}
    return subprocess.Popen(cmd, stdout=(tmp / f"{name}.log").open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``: Ray's raylet and workers leave `ray start`'s process group, so a
    node's processes are found through their parents."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def end(proc, sig=signal.SIGTERM):
    """Signal the node: `ray start` and every process under it, at once (SIGKILL: the node dies)."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)  # a node that ignores SIGTERM is killed below
    except subprocess.TimeoutExpired:
        pass
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def token_auth(on: bool) -> None:
    """RAY_AUTH_MODE for this process; Ray reads it into its config once, so the config is read again."""
    from ray._raylet import Config

    if on:
        os.environ["RAY_AUTH_MODE"] = "token"
    else:
        os.environ.pop("RAY_AUTH_MODE", None)
    Config.initialize("")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    tmp = Path("/tmp") / f"rt2n-{os.getpid()}"  # short: Ray's socket paths live under the temp dir
    tmp.mkdir(exist_ok=True)
    port = free_port()
    # The head has room for both ranks: where the worker node's rank goes when that node dies.
    head = start_node(tmp, "head", 2, "--head", f"--port={port}", "--include-dashboard=false",
                      f"--ray-client-server-port={free_port()}")
    worker = start_node(tmp, "worker", 1, f"--address=127.0.0.1:{port}")
    token_auth(True)  # the nodes ask for Ray's token; this driver sends it
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    pytest.fail((tmp / "head.log").read_text()[-3000:])
                time.sleep(0.5)
        ray.init(address=f"127.0.0.1:{port}")
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.time() > deadline:
                pytest.fail((tmp / "worker.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"worker": worker}
    finally:
        ray.shutdown()
        token_auth(False)
        end(worker)
        end(head)


def perm_of(run):
    return json.loads((run / "perm.json").read_text())


def test_ranks_land_on_both_nodes_and_agree_with_local(two_nodes, digits_source, tmp_path):
    src = str(digits_source / "source")
    cfg = TransferConfig(method="gmt", steps=3, grad_batches=2, seed=5)
    backend = RayBackend(prepare(src, cfg, target_seed=2), cfg, RayConfig(workers=2))
    try:
        nodes = {p["node"] for p in backend.describe()}
    finally:
        backend.close()
    assert len(nodes) == 2  # SPREAD placement: one rank per node
    remote = transfer(src, str(tmp_path / "ray"), cfg, target_seed=2, backend="ray", ray_config=RayConfig(workers=2),
                      progress=False)
    local = transfer(src, str(tmp_path / "local"), cfg, target_seed=2, progress=False)
    assert remote["val_acc"] == local["val_acc"]
    assert perm_of(tmp_path / "ray") == perm_of(tmp_path / "local")


def test_killing_the_worker_node_during_a_step_changes_nothing(two_nodes, digits_source, tmp_path, monkeypatch):
    # Runs last in this module: it kills the second node.
    src = str(digits_source / "source")
    cfg = TransferConfig(method="fgmt", steps=6, grad_batches=128, batch_size=256, seed=7)
    calm = transfer(src, str(tmp_path / "calm"), cfg, target_seed=2, progress=False)
    events = {}
    command, wait = WorkerGroup.command, ray.wait

    def command_then_kill(self, kind, args):
        # Step 4's command: the node dies once the command is out, while the ranks compute.
        if kind == "step" and args["s"] == 4 and "killed" not in events:
            events["armed"] = True
            try:
                return command(self, kind, args)
            finally:
                events["step_ended"] = time.monotonic()
        return command(self, kind, args)

    def wait_after_kill(*a, **k):
        # The group's first wait for step 4's answer: the command has gone out and no rank can have
        # answered yet (a step computes for far longer than SIGKILL takes), so the kill is mid-step.
        if events.pop("armed", False):
            end(two_nodes["worker"], signal.SIGKILL)
            events["killed"] = time.monotonic()
        return wait(*a, **k)

    monkeypatch.setattr(WorkerGroup, "command", command_then_kill)
    monkeypatch.setattr(ray, "wait", wait_after_kill)
    cut = transfer(src, str(tmp_path / "cut"), cfg, target_seed=2, backend="ray",
                   ray_config=RayConfig(workers=2, placement_timeout_s=120), progress=False)
    assert events["killed"] < events["step_ended"]  # the node died while step 4 was in flight
    assert cut["traffic"]["recoveries"] >= 1
    assert len({p["node"] for p in cut["placement"]}) == 1  # both ranks now on the head
    for key in ("val_acc", "test_acc", "final_test_acc", "best_step"):
        assert cut[key] == calm[key]
    assert perm_of(tmp_path / "cut") == perm_of(tmp_path / "calm")
