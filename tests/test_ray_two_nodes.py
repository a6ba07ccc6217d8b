"""A two-node Ray cluster (ray.cluster_utils.Cluster): workers spread over both nodes, same answer."""

import json

import pytest
import ray
from ray.cluster_utils import Cluster

from raytraj.distributed import RayBackend
from raytraj.transfer import TransferConfig, prepare, transfer


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_workers_land_on_both_nodes_and_agree_with_local(two_nodes, digits_source, tmp_path):
    src = str(digits_source / "source")
    cfg = TransferConfig(method="gmt", steps=4, seed=5)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    backend = RayBackend(prepare(src, cfg, target_seed=2), cfg, workers=2)
    try:
        nodes = {p["node"] for p in backend.describe()}
    finally:
        backend.close()
    assert len(nodes) == 2  # SPREAD placement: one worker per node
    remote = transfer(src, str(tmp_path / "ray"), cfg, target_seed=2, backend="ray", backend_options={"workers": 2},
                      progress=False)
    local = transfer(src, str(tmp_path / "local"), cfg, target_seed=2, progress=False)
    assert remote["val_acc"] == local["val_acc"]
    assert json.loads((tmp_path / "ray" / "perm.json").read_text()) == \
        json.loads((tmp_path / "local" / "perm.json").read_text())
