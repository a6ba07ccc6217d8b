"""A user's own model on Ray: an ensemble on a two-node cluster with the package shipped by
--py-modules, and the recorder inside a Ray Train TorchTrainer (examples/ray_train_record.py)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from raytraj.cli import main
from raytraj.trajectory import TrajectoryStore
from userpkg import NAME, importable, write_user_package

pytestmark = pytest.mark.slow  # Ray Train: the end-to-end tier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = write_user_package(tmp_path_factory.mktemp("outside"))
    importable(root)  # the driver builds the model too; the workers get it only through --py-modules
    from byo_userpkg.train import main as train_main

    train_main(str(root / "src"), seed=1, epochs=2)
    return root


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_ensemble_of_a_user_model_on_two_nodes(pkg, two_nodes, tmp_path, capsys):
    out = tmp_path / "ens"
    code = main(["ensemble", "--source", str(pkg / "src"), "--members", "2", "--steps", "3", "--out", str(out),
                 "--address", two_nodes.address, "--py-modules", str(pkg / NAME)])
    assert code == 0, capsys.readouterr().err
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    result = json.loads((out / "ensemble.json").read_text())
    assert len(result["members"]) == 2
    assert all(m["test_acc"] > 30 for m in result["members"])  # a 10-class model that learned from the trajectory
    # The workers imported the package from the shipped copy, not from the driver's path.
    env = ray.get_runtime_context().runtime_env
    assert any(NAME in str(m) or m.startswith("gcs://") for m in env.get("py_modules", []))


def test_ray_backend_transfer_of_a_user_model_matches_local(pkg, two_nodes, tmp_path, capsys):
    args = ["transfer", "--source", str(pkg / "src"), "--target-seed", "5", "--method", "fgmt", "--steps", "3",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2",
                 "--address", two_nodes.address, "--py-modules", str(pkg / NAME)]) == 0, capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    remote = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert remote["val_acc"] == local["val_acc"]  # dropout masks are seeded per batch, not per worker
    assert (tmp_path / "ray" / "perm.json").read_text() == (tmp_path / "local" / "perm.json").read_text()


def test_runtime_env_flags_need_ray(pkg, tmp_path, capsys):
    assert main(["transfer", "--source", str(pkg / "src"), "--target-seed", "5", "--method", "naive",
                 "--steps", "2", "--out", str(tmp_path / "x"), "--py-modules", str(pkg / NAME)]) == 2
    assert "need --backend ray" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_ray_train_example_records_from_rank_0(tmp_path):
    out = tmp_path / "rt"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # The README's command, as written there but for the storage folder.
    text = (ROOT / "README.md").read_text().split("## Your own model", 1)[1]
    cmd = re.search(r"^python (examples/ray_train_record\.py .*)$", text, flags=re.M)[1].split()
    cmd[cmd.index("--storage") + 1] = str(out)
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    store = TrajectoryStore(str(out / "trajectory"))
    assert store.complete and store.num_steps == 3
    assert not any(n.startswith("module.") for n in store.names)
    assert store.meta["model"]["factory"].endswith(":make_model")
    assert store.meta["ray_train"]["world_size"] == 2
    # Written once (by rank 0): every step is listed exactly once, epochs in order.
    assert [s["epoch"] for s in store.manifest["steps"]] == [0, 1, 2]
