"""A two-node Ray cluster (ray.cluster_utils.Cluster): workers spread over both nodes, same answer,
and losing the worker node mid-transfer changes nothing in the result."""

import json

import pytest
import ray
from ray.cluster_utils import Cluster

from raytraj.distributed import RayBackend
from raytraj.ray_config import RayConfig
from raytraj.transfer import TransferConfig, prepare, transfer

pytestmark = pytest.mark.slow  # a two-node Ray cluster: the end-to-end tier


@pytest.fixture(scope="module")
def two_nodes():
    # The head has room for one more worker: where a lost node's worker is rebuilt.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.worker_node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_workers_land_on_both_nodes_and_agree_with_local(two_nodes, digits_source, tmp_path):
    src = str(digits_source / "source")
    cfg = TransferConfig(method="gmt", steps=4, seed=5)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    backend = RayBackend(prepare(src, cfg, target_seed=2), cfg, RayConfig(workers=2))
    try:
        nodes = {p["node"] for p in backend.describe()}
    finally:
        backend.close()
    assert len(nodes) == 2  # SPREAD placement: one worker per node
    remote = transfer(src, str(tmp_path / "ray"), cfg, target_seed=2, backend="ray", ray_config=RayConfig(workers=2),
                      progress=False)
    local = transfer(src, str(tmp_path / "local"), cfg, target_seed=2, progress=False)
    assert remote["val_acc"] == local["val_acc"]
    assert json.loads((tmp_path / "ray" / "perm.json").read_text()) == \
        json.loads((tmp_path / "local" / "perm.json").read_text())


def test_losing_the_worker_node_mid_transfer_changes_nothing(two_nodes, digits_source, tmp_path):
    # Runs last in this module: it removes the second node.
    src = str(digits_source / "source")
    cfg = TransferConfig(method="fgmt", steps=6, grad_batches=2, seed=7)
    calm = transfer(src, str(tmp_path / "calm"), cfg, target_seed=2, progress=False)
    removed = []

    def remove_node(step, acc):
        if step == 2 and not removed:
            two_nodes.remove_node(two_nodes.worker_node)
            removed.append(step)

    cut = transfer(src, str(tmp_path / "cut"), cfg, target_seed=2, backend="ray",
                   ray_config=RayConfig(workers=2, placement_timeout_s=120), on_eval=remove_node, progress=False)
    assert removed and cut["traffic"]["recoveries"] >= 1
    assert len({p["node"] for p in cut["placement"]}) == 1  # both workers now on the head
    for key in ("val_acc", "test_acc", "final_test_acc", "best_step"):
        assert cut[key] == calm[key]
    assert json.loads((tmp_path / "cut" / "perm.json").read_text()) == \
        json.loads((tmp_path / "calm" / "perm.json").read_text())
