"""Bad input is refused where it enters: recipes, model options, user arrays, damaged manifests and
step files, non-finite values, and a target init that equals the source's."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from raytraj.cli import main
from raytraj.config import ConfigError
from raytraj.data import load_data
from raytraj.train import TrainConfig, train_from_args
from raytraj.trajectory import TrajectoryError, TrajectoryStore, TrajectoryWriter
from raytraj.transfer import TransferConfig, transfer


@pytest.mark.parametrize("fields, message", [
    ({"epochs": 0}, "--epochs must be >= 1"),
    ({"epochs": -3}, "--epochs must be >= 1"),
    ({"batch_size": -8}, "--batch-size must be >= 1"),
    ({"lr": -1.0}, "--lr must be > 0"),
    ({"lr": float("nan")}, "--lr must be a finite number"),
    ({"momentum": 1.5}, "--momentum must be in"),
    ({"weight_decay": -1e-4}, "--weight-decay must be >= 0"),
    ({"warmup_epochs": -1.0}, "--warmup-epochs must be >= 0"),
    ({"save_every": -1}, "--save-every must be >= 0"),
])
def test_train_config_refuses_bad_values(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--epochs", "1", "--batch-size", "-4"], "--batch-size must be >= 1"),
    (["--epochs", "1", "--lr", "-1"], "--lr must be > 0"),
    (["--epochs", "1", "--model-arg", "hidden=[-5]"], "hidden=[-5]"),
    (["--epochs", "1", "--model-arg", "hidden=[0]"], "hidden=[0]"),
])
def test_train_cli_bad_recipe_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "t"
    assert main(["train", "--model", "mlp", "--data", "digits", "--out", str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before a "complete" store holding only the init could be written


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_with_mismatched_lengths_or_bad_labels_is_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 3
    assert load_data(_npz(tmp_path, x_train=x, y_train=y)).num_classes == 3
    with pytest.raises(ConfigError, match="40 samples but y_train has shape"):
        load_data(_npz(tmp_path, x_train=x, y_train=y[:30]))
    with pytest.raises(ConfigError, match="negative labels"):
        load_data(_npz(tmp_path, x_train=x, y_train=y - 1))
    with pytest.raises(ConfigError, match="integer class labels"):
        load_data(_npz(tmp_path, x_train=x, y_train=y + 0.5))
    with pytest.raises(ConfigError, match="y_test has shape"):
        load_data(_npz(tmp_path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:9]))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ConfigError, match="NaN or inf"):
        load_data(_npz(tmp_path, x_train=bad, y_train=y))


def _toy_store(path, states, meta=None):
    writer = TrajectoryWriter.create(str(path), meta or {"model": {"name": "toy"}}, states[0], ["w"])
    for i, s in enumerate(states):
        writer.write(i, s)
    writer.finish(val_acc=[50.0] * (len(states) - 1))
    return TrajectoryStore(str(path))


def test_store_refuses_to_record_non_finite_values(tmp_path):
    writer = TrajectoryWriter.create(str(tmp_path / "s"), {}, {"w": torch.zeros(2)}, ["w"])
    writer.write(0, {"w": torch.zeros(2)})
    with pytest.raises(FloatingPointError, match="w holds NaN or inf values at step 1"):
        writer.write(1, {"w": torch.tensor([1.0, float("inf")])})


def _plant_non_finite(store_dir, step, value, name="w", index=0):
    """Rewrite one step file with a non-finite (or any) value and a matching checksum (as a diverged
    run recorded by an older writer would look)."""
    import zlib

    path = store_dir / "steps" / f"{step:06d}.arrow"
    table = ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    fields, cols = [], []
    for field, col in zip(table.schema, table.columns):
        values = col.combine_chunks().values.to_numpy(zero_copy_only=False).copy()
        if field.name == name:
            values[index] = value
            meta = {**{k.decode(): v.decode() for k, v in field.metadata.items()},
                    "crc32": str(zlib.crc32(values.tobytes()))}
            field = field.with_metadata(meta)
        fields.append(field)
        cols.append(pa.FixedSizeListArray.from_arrays(pa.array(values), col.type.list_size))
    schema = pa.schema(fields, metadata=table.schema.metadata)
    with pa.OSFile(str(path), "wb") as f, ipc.new_file(f, schema) as w:
        w.write_batch(pa.record_batch(cols, schema=schema))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_reading_a_non_finite_point_names_store_step_and_tensor(tmp_path, value):
    _toy_store(tmp_path / "s", [{"w": torch.zeros(3)}, {"w": torch.ones(3)}, {"w": torch.ones(3) * 2}])
    _plant_non_finite(tmp_path / "s", 1, value)
    store = TrajectoryStore(str(tmp_path / "s"))
    assert torch.equal(store.read(2)["w"], torch.ones(3) * 2)
    with pytest.raises(TrajectoryError, match=r"steps/000001\.arrow: tensor w holds NaN or inf"):
        store.read(1)


@pytest.mark.parametrize("method", ["naive", "fgmt"])
def test_transfer_of_a_diverged_source_saves_nothing_and_blames_the_source(digits_source, tmp_path, method):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(digits_source / "source", src)
    store = TrajectoryStore(str(src))
    name = store.param_names[0]
    _plant_non_finite(src, store.last_step, np.nan, name)  # Naive and linear schedules read steps 0 and T
    with pytest.raises(TrajectoryError, match=f"{store.last_step:06d}.arrow: tensor {name} holds NaN"):
        transfer(str(src), str(tmp_path / "run"), TransferConfig(method=method, steps=3), target_seed=5,
                 progress=False)
    assert not list((tmp_path / "run").glob("*.safetensors"))


@pytest.mark.parametrize("pixels, message", [
    # many huge weights: the hidden activations overflow float32, so the loss and the gradients do
    ([19, 20, 21, 22, 26, 27, 28, 29, 35, 36, 37], "the gradient of the transferred model at trajectory point "),
    # one: the gradients stay finite but their products in the cost matrices overflow
    ([27], "the cost matrix of permutation group "),
])
def test_an_overflow_at_finite_weights_says_where_it_first_appears(digits_source, tmp_path, capsys, pixels,
                                                                    message):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(digits_source / "source", src)
    store = TrajectoryStore(str(src))
    # Huge but finite first-layer weights of the first hidden unit, on pixels that vary (the middle of the
    # 8x8 digits): every recorded point stays finite.
    for step in range(1, store.last_step + 1):
        for pixel in pixels:
            _plant_non_finite(src, step, 3e38, "layers.0.weight", index=pixel)
    assert all(torch.isfinite(store.read(s)["layers.0.weight"]).all() for s in range(store.last_step + 1))
    code = main(["transfer", "--source", str(src), "--target-seed", "5", "--method", "fgmt", "--steps", "3",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert message in err[0] and "NaN or inf" in err[0] and "lower --lr" in err[0], err
    assert "target tensor" not in err[0], err
    if "gradient" in message:
        assert "in layers." in err[0] and "though its weights are finite" in err[0], err
    assert not list((tmp_path / "run").glob("*.safetensors"))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("steps"), "no valid 'steps' list"),
    (lambda m: m.pop("meta"), "no 'meta' record"),
    (lambda m: m["tensors"][0].pop("shape"), "no valid 'tensors' table"),
    (lambda m: m.pop("complete"), "no 'complete' flag"),
])
def test_manifest_missing_keys_is_a_clear_error(tmp_path, edit, message):
    _toy_store(tmp_path / "s", [{"w": torch.zeros(3)}, {"w": torch.ones(3)}])
    path = tmp_path / "s" / "trajectory.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryError, match=message):
        TrajectoryStore(str(tmp_path / "s"))


def test_manifest_listing_fewer_steps_than_recorded_is_refused(tmp_path):
    _toy_store(tmp_path / "s", [{"w": torch.zeros(3)}, {"w": torch.ones(3)}, {"w": torch.ones(3) * 2}])
    path = tmp_path / "s" / "trajectory.json"
    manifest = json.loads(path.read_text())
    manifest["steps"] = manifest["steps"][:2]
    path.write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryError, match="lists 2 steps .* holds 3 step files"):
        TrajectoryStore(str(tmp_path / "s"))


def test_source_meta_without_model_and_invalid_utf8_are_clear_errors(digits_source, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(digits_source / "source", src)
    manifest = json.loads((src / "trajectory.json").read_text())
    del manifest["meta"]["model"]
    (src / "trajectory.json").write_text(json.dumps(manifest))
    argv = ["transfer", "--source", str(src), "--target-seed", "5", "--method", "naive", "--steps", "2", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "lacks ['model']" in capsys.readouterr().err
    (src / "trajectory.json").write_bytes(b'{"format": "raytraj-trajectory", "x": "\xff\xfe"}')
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err


def test_damaged_arrow_field_metadata_is_a_trajectory_error(tmp_path):
    _toy_store(tmp_path / "s", [{"w": torch.zeros(3)}, {"w": torch.ones(3)}])
    path = tmp_path / "s" / "steps" / "000001.arrow"
    table = ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    field = table.schema.field("w").with_metadata({b"shape": b"\xff\xfe", b"dtype": b"float32", b"crc32": b"0"})
    schema = pa.schema([field], metadata=table.schema.metadata)
    with pa.OSFile(str(path), "wb") as f, ipc.new_file(f, schema) as w:
        w.write_batch(pa.record_batch([table.column(0).combine_chunks()], schema=schema))
    with pytest.raises(TrajectoryError, match="metadata of tensor w is damaged"):
        TrajectoryStore(str(tmp_path / "s")).read(1)


def test_fuzzed_step_files_fail_as_trajectory_errors(tmp_path):
    """Single-byte changes anywhere in a step file: a TrajectoryError or the right tensor, never
    another exception (UnicodeDecodeError was found this way)."""
    _toy_store(tmp_path / "s", [{"w": torch.zeros(3)}, {"w": torch.arange(3.0)}])
    path = tmp_path / "s" / "steps" / "000001.arrow"
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(good), size=min(len(good), 300), replace=False):
        for byte in (0x00, 0xFF, 0x80):
            data = bytearray(good)
            data[pos] = byte
            path.write_bytes(bytes(data))
            try:
                assert torch.equal(TrajectoryStore(str(tmp_path / "s")).read(1)["w"], torch.arange(3.0))
            except TrajectoryError:
                pass


def test_target_init_equal_to_the_source_init_is_refused(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")  # trained with --seed 1
    with pytest.raises(ConfigError, match="equals the init of the source"):
        transfer(src, str(tmp_path / "a"), TransferConfig(method="naive", steps=2), target_seed=1, progress=False)
    with pytest.raises(ConfigError, match="equals the init of the source"):
        transfer(src, str(tmp_path / "b"), TransferConfig(method="naive", steps=2), target_init=f"{src}:0",
                 progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main(["sweep", "--source", src, "--out", str(tmp_path / "sw"), "--param", "steps=2,3",
                 "--target-seed", "1"]) == 2
    assert "equals the init of the source" in capsys.readouterr().err
    from raytraj.cli import build_parser

    args = build_parser().parse_args(["sweep", "--source", src, "--out", "o", "--param", "steps=2"])
    assert args.target_seed != TrajectoryStore(src).meta["seed"]


def test_schedule_actual_with_a_different_steps_count_is_refused(digits_source, tmp_path, capsys):
    src = str(digits_source / "source")
    recorded = TrajectoryStore(src).last_step
    argv = ["transfer", "--source", src, "--target-seed", "5", "--method", "naive", "--schedule", "actual", "--quiet"]
    assert main([*argv, "--steps", str(recorded + 3), "--out", str(tmp_path / "a")]) == 2
    assert f"does not match the {recorded} recorded steps" in capsys.readouterr().err
    assert main([*argv, "--steps", str(recorded), "--out", str(tmp_path / "b")]) == 0
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    for run in ("b", "c"):
        config = json.loads((tmp_path / run / "config.json").read_text())
        metrics = json.loads((tmp_path / run / "metrics.json").read_text())
        assert metrics["steps"] == recorded and config["transfer"]["steps"] in (None, recorded)
