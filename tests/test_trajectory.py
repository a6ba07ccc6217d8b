"""The Arrow trajectory store: round trip, partial reads, integrity, atomic writes; schedules."""

import json
import os

import pytest
import torch

from raytraj.trajectory import (
    LinearTrajectory,
    TrajectoryError,
    TrajectoryStore,
    TrajectoryWriter,
    lambdas,
    parse_ref,
    read_state,
)


def states(n=3):
    gen = torch.Generator().manual_seed(0)
    return [{
        "w": torch.randn(4, 3, generator=gen),
        "b": torch.randn(4, generator=gen).double(),
        "h": torch.randn(2, 2, generator=gen).to(torch.bfloat16),
        "bn.running_var": torch.rand(4, generator=gen),
        "bn.num_batches_tracked": torch.tensor(7 * i),
        "empty": torch.zeros(0, 3),
    } for i in range(n)]


def write_store(path, steps):
    writer = TrajectoryWriter.create(str(path), {"model": {"name": "toy"}, "seed": 3}, steps[0], ["w", "b", "h"])
    for i, s in enumerate(steps):
        writer.write(i, s, {"epoch": i})
    writer.finish(test_acc=1.0)
    return TrajectoryStore(str(path))


def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path):
    steps = states()
    store = write_store(tmp_path / "s", steps)
    assert store.complete and store.num_steps == 3 and store.meta["seed"] == 3
    assert store.param_names == ["w", "b", "h"]
    assert store.manifest["versions"]["torch"] == torch.__version__
    for i, expected in enumerate(steps):
        got = store.read(i)
        assert list(got) == list(expected)
        for k in expected:
            assert got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k])
    assert store.step_info(2)["epoch"] == 2
    assert not [f for f in os.listdir(tmp_path / "s" / "steps") if f.startswith(".tmp")]


def test_partial_read_touches_only_the_asked_tensors(tmp_path):
    store = write_store(tmp_path / "s", states())
    # Damage the bytes of tensor "w" in step 1: reading only "b" must still succeed.
    path = tmp_path / "s" / "steps" / "000001.arrow"
    raw = bytearray(path.read_bytes())
    w = store.read(1, ["w"])["w"].numpy().tobytes()
    at = bytes(raw).find(w)
    raw[at + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert torch.equal(store.read(1, ["b"])["b"], states()[1]["b"])
    with pytest.raises(TrajectoryError, match="checksum"):
        store.read(1, ["w"])


def test_truncated_corrupt_and_missing_files_raise(tmp_path):
    store = write_store(tmp_path / "s", states())
    step2 = tmp_path / "s" / "steps" / "000002.arrow"
    step2.write_bytes(step2.read_bytes()[:100])
    with pytest.raises(TrajectoryError, match="truncated or corrupt"):
        store.read(2)
    os.remove(tmp_path / "s" / "steps" / "000001.arrow")
    with pytest.raises(TrajectoryError, match="file steps/000001.arrow is missing"):
        store.read(1)
    with pytest.raises(TrajectoryError, match="step 5 is not in"):
        store.read(5)
    manifest = json.loads((tmp_path / "s" / "trajectory.json").read_text())
    del manifest["steps"][1]
    (tmp_path / "s" / "trajectory.json").write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryError, match=r"missing steps \[1\]"):
        TrajectoryStore(str(tmp_path / "s"))
    (tmp_path / "s" / "trajectory.json").write_text("{not json")
    with pytest.raises(TrajectoryError, match="damaged"):
        TrajectoryStore(str(tmp_path / "s"))
    with pytest.raises(TrajectoryError, match="not a trajectory store"):
        TrajectoryStore(str(tmp_path / "nowhere"))


def test_schema_version_is_checked(tmp_path):
    write_store(tmp_path / "s", states())
    manifest = json.loads((tmp_path / "s" / "trajectory.json").read_text())
    manifest["schema"] = 99
    (tmp_path / "s" / "trajectory.json").write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryError, match="schema 99"):
        TrajectoryStore(str(tmp_path / "s"))


def test_writer_refuses_out_of_order_and_mismatched_steps_and_resumes(tmp_path):
    steps = states()
    writer = TrajectoryWriter.create(str(tmp_path / "s"), {}, steps[0], ["w"])
    writer.write(0, steps[0])
    with pytest.raises(TrajectoryError, match="expected step 1"):
        writer.write(2, steps[2])
    with pytest.raises(TrajectoryError, match="w: got"):
        writer.write(1, {**steps[1], "w": torch.zeros(5)})
    resumed = TrajectoryWriter.resume(str(tmp_path / "s"))  # as after a crash
    resumed.write(1, steps[1])
    resumed.finish()
    assert TrajectoryStore(str(tmp_path / "s")).num_steps == 2
    with pytest.raises(TrajectoryError, match="finished"):
        TrajectoryWriter.resume(str(tmp_path / "s"))
    with pytest.raises(TrajectoryError, match="already holds"):
        TrajectoryWriter.create(str(tmp_path / "s"), {}, steps[0], ["w"])


def test_refs_and_read_state(tmp_path):
    write_store(tmp_path / "s", states())
    assert parse_ref("s3://bucket/run:4") == ("s3://bucket/run", 4)
    assert parse_ref("runs/a") == ("runs/a", None)
    state, store, step = read_state(f"{tmp_path / 's'}:1")
    assert step == 1 and torch.equal(state["w"], states()[1]["w"])
    assert read_state(str(tmp_path / "s"))[2] == 2


def test_store_on_a_pyarrow_filesystem_uri(tmp_path):
    store = write_store(f"file://{tmp_path}/uri", states())
    assert torch.equal(store.read(2, ["w"])["w"], states()[2]["w"])


def test_schedules_match_the_paper_notes():
    # paper-notes section 2: T=30 -> 0.065, 0.129, 0.193, ...; lambda_8 ~ 0.49, lambda_9 ~ 0.55
    lam = lambdas(30, "cosine")
    assert [round(v, 3) for v in lam[1:4]] == [0.065, 0.129, 0.193]
    assert round(lam[8], 2) == 0.49 and round(lam[9], 2) == 0.55 and lam[30] == 1.0
    lam = lambdas(15, "cosine")
    assert [round(v, 3) for v in lam[1:3]] == [0.125, 0.249] and round(lam[5], 2) == 0.59
    assert [round(v, 3) for v in lambdas(5, "cosine")[1:]] == [0.333, 0.635, 0.853, 0.968, 1.0]
    assert lambdas(4, "uniform") == [0.0, 0.25, 0.5, 0.75, 1.0]
    increments = [b - a for a, b in zip(lam, lam[1:])]
    assert increments == sorted(increments, reverse=True)  # large early, ~0 at the end


def test_linear_trajectory_interpolates_floats_and_keeps_counters():
    a, b = states(2)
    traj = LinearTrajectory(a, b, steps=4, schedule="uniform")
    mid = traj.point(2)
    torch.testing.assert_close(mid["w"], a["w"] + 0.5 * (b["w"] - a["w"]))
    assert torch.equal(traj.point(0)["w"], a["w"]) and torch.equal(traj.point(4)["w"], b["w"])
    assert int(mid["bn.num_batches_tracked"]) == int(b["bn.num_batches_tracked"])
    with pytest.raises(TrajectoryError, match="outside"):
        traj.point(5)


def test_typed_accessors_read_what_the_store_records(digits_source, tmp_path):
    from raytraj import TrajectoryRecorder
    from raytraj.config import ConfigError
    from raytraj.data import DataConfig
    from raytraj.models import build_model
    from raytraj.train import TrainConfig

    store = TrajectoryStore(str(digits_source / "source"))
    data = store.data_config()
    assert isinstance(data, DataConfig) and data.source == "digits"
    recipe = store.recipe()
    assert isinstance(recipe, TrainConfig) and recipe.epochs == 4
    state = build_model(store.model_config(), 0).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == store.shapes
    # A recorder store given neither a factory nor data names what to pass instead, and trains with defaults.
    rec = TrajectoryRecorder(str(tmp_path / "rec"), torch.nn.Linear(3, 2))
    rec.record(torch.nn.Linear(3, 2))
    rec.close()
    bare = TrajectoryStore(str(tmp_path / "rec"))
    with pytest.raises(ConfigError, match="--model"):
        bare.model_config()
    with pytest.raises(ConfigError, match="--data"):
        bare.data_config()
    assert bare.recipe() == TrainConfig()
