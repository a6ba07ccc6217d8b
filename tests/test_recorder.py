"""TrajectoryRecorder: recording from a plain PyTorch loop, atomically and resumably."""

import subprocess
import sys

import pytest
import torch

from raytraj import TrajectoryRecorder, TrajectoryStore
from raytraj.config import ConfigError
from raytraj.models import build_model, model_from_dict
from raytraj.trajectory import TrajectoryError
from userpkg import importable, write_user_package


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    root = write_user_package(tmp_path_factory.mktemp("outside"))
    importable(root)
    return root


def test_records_init_on_construction_and_each_epoch(pkg, tmp_path):
    from byo_userpkg.train import main

    model = main(str(tmp_path / "s"), seed=1, epochs=3)
    store = TrajectoryStore(str(tmp_path / "s"))
    assert store.complete and store.num_steps == 4
    meta = store.meta
    assert meta["model"] == {"name": "factory", "factory": "byo_userpkg.nets:make_net", "kwargs": {"width": 64}}
    assert meta["data"]["source"] == "import" and meta["data"]["path"] == "byo_userpkg.data:load"
    assert meta["recorder"] == {"every": "epoch"} and meta["total_s"] > 0
    assert set(store.manifest["versions"]) >= {"torch", "raytraj", "pyarrow"}
    # Step 0 is the factory's init under the recorded seed; the last step is the trained model.
    init = build_model(model_from_dict(meta["model"]), 1).state_dict()
    assert all(torch.equal(init[k], v) for k, v in store.read(0).items())
    last = store.read(3)
    assert all(torch.equal(last[k], v) for k, v in model.state_dict().items())
    assert [s["epoch"] for s in store.manifest["steps"]] == [0, 1, 2, 3]
    assert {t["kind"] for t in store.manifest["tensors"]} == {"param"}  # GroupNorm has no buffers


def test_every_n_iterations_and_ddp_prefix(pkg, tmp_path):
    from byo_userpkg.nets import make_net

    model = make_net(width=8)

    class Wrapper(torch.nn.Module):  # what DDP looks like from outside: the model under .module
        def __init__(self, m):
            super().__init__()
            self.module = m

    wrapped = Wrapper(model)
    assert all(k.startswith("module.") for k in wrapped.state_dict())
    rec = TrajectoryRecorder(str(tmp_path / "s"), wrapped, model_factory="byo_userpkg.nets:make_net",
                             model_kwargs={"width": 8}, every=2)
    for _ in range(5):
        with torch.no_grad():
            model.classifier.bias.add_(1.0)
        rec.step(wrapped)
    rec.close()
    store = TrajectoryStore(str(tmp_path / "s"))
    assert store.num_steps == 3 and [s["iteration"] for s in store.manifest["steps"]] == [0, 2, 4]
    assert not any(k.startswith("module.") for k in store.names)
    assert torch.allclose(store.read(2)["classifier.bias"] - store.read(0)["classifier.bias"], torch.full((10,), 4.0))


def test_crash_leaves_resumable_store(pkg, tmp_path):
    out = tmp_path / "s"
    code = (f"import sys; sys.path.insert(0, {str(pkg)!r}); from byo_userpkg.train import main; "
            f"main({str(out)!r}, seed=1, epochs=4, crash_after=2)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    store = TrajectoryStore(str(out))
    assert not store.complete and store.num_steps == 3
    with pytest.raises(TrajectoryError, match="resume"):
        TrajectoryRecorder(str(out), torch.nn.Linear(2, 2))
    rec = TrajectoryRecorder.resume(str(out), step=1)  # our own checkpoint was from epoch 1
    assert rec.last_step == 1 and rec.epoch == 1
    from byo_userpkg.nets import make_net

    model = make_net(width=64)
    model.load_state_dict(rec.latest_state())
    rec.record(model)
    rec.record(model)
    rec.close(test_acc=50.0)
    store = TrajectoryStore(str(out))
    assert store.complete and store.num_steps == 4 and store.meta["test_acc"] == 50.0
    assert [s["epoch"] for s in store.manifest["steps"]] == [0, 1, 2, 3]
    store.verify()
    with pytest.raises(TrajectoryError, match="finished"):
        TrajectoryRecorder.resume(str(out))


def test_bad_recorder_input(pkg, tmp_path):
    from byo_userpkg.nets import make_net

    model = make_net(width=8)
    with pytest.raises(ConfigError, match="differs from the recorded"):
        TrajectoryRecorder(str(tmp_path / "a"), model, model_factory="byo_userpkg.nets:make_net",
                           model_kwargs={"width": 16})
    with pytest.raises(ConfigError, match="cannot import"):
        TrajectoryRecorder(str(tmp_path / "b"), model, model_factory="nope_pkg.nets:make_net")
    with pytest.raises(ConfigError, match="JSON"):
        TrajectoryRecorder(str(tmp_path / "c"), model, model_factory="byo_userpkg.nets:make_net",
                           model_kwargs={"width": object()})
    with pytest.raises(ConfigError, match="every"):
        TrajectoryRecorder(str(tmp_path / "d"), model, every=0)
    for name in "abcd":  # nothing half-written
        assert not (tmp_path / name).exists()
    rec = TrajectoryRecorder(str(tmp_path / "e"), model)
    assert rec.writer.manifest["meta"]["model"]["name"] == "module"
    with pytest.raises(TrajectoryError, match="only the init"):
        rec.close()


DDP_RANK = """
import sys
import torch
import torch.distributed as dist
from raytraj import TrajectoryRecorder, TrajectoryStore

rank, store, rendezvous = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
model = torch.nn.Linear(3, 2)
rec = TrajectoryRecorder(store, model, every=2)
for _ in range(4):  # writes at iterations 2 and 4
    rec.step(model)
dist.barrier()  # then the job crashes without close(), and every rank resumes
rec = TrajectoryRecorder.resume(store)
for _ in range(2):  # rank 0 writes at iteration 6; the other rank must count without error
    with torch.no_grad():
        model.bias.add_(1.0)
    rec.step(model)
rec.close()
dist.barrier()
if rank == 0:
    print([s["iteration"] for s in TrajectoryStore(store).manifest["steps"]], TrajectoryStore(store).complete)
dist.destroy_process_group()
"""


def test_a_resumed_ddp_job_records_on_every_rank(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(DDP_RANK)
    args = [str(tmp_path / "s"), str(tmp_path / "rendezvous")]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-600:] for _, err in outs]
    assert outs[0][0].strip() == "[0, 2, 4, 6] True"
