"""The trajectory store: one Arrow IPC file per recorded step, plus a JSON manifest.

Layout of a store (a local folder or an ``s3://`` / ``gs://`` prefix):

    trajectory.json        manifest: schema version, metadata, tensor table, recorded steps
    steps/000000.arrow     step 0 (the init): one column per tensor, one row

Each column is a one-row fixed-size list holding the flat tensor, with its shape, dtype and
CRC32 in the field metadata, so one tensor can be read without reading the others (Arrow's
``included_fields``) and every read is checked. A step file is written atomically before the
manifest that lists it, so a crash leaves at worst an unlisted file that the next write replaces.
"""

from __future__ import annotations

import errno
import json
import platform
import zlib
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch

from .. import fs
from ..finite import is_finite

SCHEMA_VERSION = 1
FORMAT = "raytraj-trajectory"
MANIFEST = "trajectory.json"
STEPS = "steps"  # the folder of step files


def is_store(location: str) -> bool:
    """Whether ``location`` holds a trajectory store (complete or not): it has a manifest."""
    return fs.exists(fs.join(location, MANIFEST))

_TORCH_TO_NUMPY = {
    torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
    torch.int64: np.int64, torch.int32: np.int32, torch.uint8: np.uint8, torch.bool: np.bool_,
    torch.bfloat16: np.uint16,  # numpy has no bfloat16: stored as its raw 16 bits
}
_DTYPES = {str(t).removeprefix("torch."): t for t in _TORCH_TO_NUMPY}


class TrajectoryError(ValueError):
    """A trajectory store that is missing, damaged, incomplete, or does not fit its use."""


def library_versions() -> dict[str, str]:
    from .. import __version__  # upward, lazy: the package's version, set before any submodule loads

    return {"raytraj": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "pyarrow": pa.__version__, "python": platform.python_version()}


def _tensor_table(state: Mapping[str, torch.Tensor], param_names: Iterable[str]) -> list[dict]:
    params = set(param_names)
    table = []
    for name, t in state.items():
        if t.dtype not in _TORCH_TO_NUMPY:
            raise TrajectoryError(f"{name}: dtype {t.dtype} cannot be stored")
        table.append({"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                      "kind": "param" if name in params else "buffer"})
    return table


class TrajectoryWriter:
    """Appends steps to a store; reopening an unfinished store continues where it stopped.

    Made by ``create`` (a new store) or ``resume`` (an unfinished one), not called directly.

    Args:
        location: the store.
        manifest: its manifest, as written.
    """

    def __init__(self, location: str, manifest: dict):
        self.location = location
        self.manifest = manifest

    @classmethod
    def create(cls, location: str, meta: dict, state: Mapping[str, torch.Tensor], param_names: Iterable[str]):
        if fs.exists(fs.join(location, MANIFEST)):
            raise TrajectoryError(f"{location} already holds a trajectory; choose another output or delete it")
        manifest = {
            "format": FORMAT, "schema": SCHEMA_VERSION, "meta": meta, "versions": library_versions(),
            "tensors": _tensor_table(state, param_names), "steps": [], "complete": False,
        }
        writer = cls(location, manifest)
        fs.atomic_write_json(fs.join(location, MANIFEST), manifest)
        return writer

    @classmethod
    def resume(cls, location: str) -> "TrajectoryWriter":
        store = TrajectoryStore(location)
        if store.complete:
            raise TrajectoryError(f"{location} holds a finished trajectory; nothing to resume")
        return cls(location, store.manifest)

    @property
    def steps(self) -> list[int]:
        return [s["step"] for s in self.manifest["steps"]]

    def write(self, step: int, state: Mapping[str, torch.Tensor], info: dict | None = None) -> None:
        expected = len(self.manifest["steps"])
        if step != expected:
            raise TrajectoryError(f"steps must be written in order: expected step {expected}, got {step}")
        table = self.manifest["tensors"]
        if [t["name"] for t in table] != list(state):
            raise TrajectoryError("step tensors differ from the store's tensor table "
                                  f"(first store tensors {[t['name'] for t in table][:3]}, got {list(state)[:3]})")
        fields, columns = [], []
        for spec in table:
            t = state[spec["name"]].detach().cpu().contiguous()
            if list(t.shape) != spec["shape"] or str(t.dtype).removeprefix("torch.") != spec["dtype"]:
                raise TrajectoryError(f"{spec['name']}: got {tuple(t.shape)} {t.dtype}, the store holds "
                                      f"{tuple(spec['shape'])} {spec['dtype']}")
            if not is_finite(t):
                raise FloatingPointError(f"{spec['name']} holds NaN or inf values at step {step}; not recording it "
                                         f"in {self.location}. Lower --lr")
            flat = t.reshape(-1)
            flat = flat.view(torch.uint16) if t.dtype == torch.bfloat16 else flat
            values = flat.numpy()
            col = pa.FixedSizeListArray.from_arrays(pa.array(values), max(1, values.size)) if values.size else \
                pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(1, values.dtype)), 1)
            meta = {"shape": json.dumps(spec["shape"]), "dtype": spec["dtype"],
                    "crc32": str(zlib.crc32(values.tobytes()))}
            fields.append(pa.field(spec["name"], col.type, metadata=meta))
            columns.append(col)
        schema = pa.schema(fields, metadata={"format": FORMAT, "schema": str(SCHEMA_VERSION), "step": str(step)})
        rel = f"{STEPS}/{step:06d}.arrow"
        with fs.atomic_output(fs.join(self.location, rel)) as out:
            with ipc.new_file(out, schema) as w:
                w.write_batch(pa.record_batch(columns, schema=schema))
        # The tensors' checksums, folded into the manifest: its digest then names the trajectory's data.
        tensors_crc = zlib.crc32(" ".join(f.metadata[b"crc32"].decode() for f in fields).encode())
        self.manifest["steps"].append({"step": step, "file": rel, "crc32": tensors_crc, **(info or {})})
        fs.atomic_write_json(fs.join(self.location, MANIFEST), self.manifest)

    def truncate(self, num_steps: int) -> None:
        """Forget steps from ``num_steps`` on (a resumed run rewrites them)."""
        self.manifest["steps"] = self.manifest["steps"][:num_steps]
        fs.atomic_write_json(fs.join(self.location, MANIFEST), self.manifest)

    def update_meta(self, **meta) -> None:
        self.manifest["meta"].update(meta)
        fs.atomic_write_json(fs.join(self.location, MANIFEST), self.manifest)

    def finish(self, **meta) -> None:
        self.manifest["meta"].update(meta)
        self.manifest["complete"] = True
        fs.atomic_write_json(fs.join(self.location, MANIFEST), self.manifest)


class TrajectoryStore:
    """Read access to a recorded trajectory: one step, or a subset of its tensors, at a time.

    Args:
        location: the store: a folder, or an ``s3://``/``gs://`` URI; it must hold a manifest.
    """

    def __init__(self, location: str):
        self.location = str(location)
        path = fs.join(self.location, MANIFEST)
        if not fs.exists(path):
            raise TrajectoryError(f"{self.location} is not a trajectory store (no {MANIFEST}); record one with "
                                  "`raytraj train ... --out DIR`")
        try:
            manifest = fs.read_json(path)
        except ValueError as e:  # JSON or UTF-8 errors, named by fs.read_json
            raise TrajectoryError(f"{e}; the store cannot be read") from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise TrajectoryError(f"{path} is not a raytraj trajectory manifest")
        if manifest.get("schema") != SCHEMA_VERSION:
            raise TrajectoryError(f"{self.location} has trajectory schema {manifest.get('schema')}, this raytraj "
                                  f"reads schema {SCHEMA_VERSION}; use the raytraj version that wrote it")
        _check_manifest(path, manifest)
        steps = [s["step"] for s in manifest["steps"]]
        if steps != list(range(len(steps))):
            missing = sorted(set(range(max(steps, default=-1) + 1)) - set(steps))
            twice = sorted({s for s in steps if steps.count(s) > 1})
            if twice:
                problem = f"lists steps {twice} more than once"
            elif missing:
                problem = f"is missing steps {missing}"
            else:
                problem = f"lists its steps out of order ({steps[:8]}{' ...' if len(steps) > 8 else ''})"
            raise TrajectoryError(f"{path} {problem}; the manifest was edited or damaged: re-record the run, "
                                  "resume it, or restore the file from a copy")
        self.manifest = manifest
        self._columns = {t["name"]: i for i, t in enumerate(manifest["tensors"])}
        if self.complete:
            # A finished store has exactly its listed step files; more means the manifest lost steps,
            # and its last listed step would silently pass for the end point.
            recorded = [n for n in fs.listdir(fs.join(self.location, STEPS)) if n.endswith(".arrow")]
            if len(recorded) > self.num_steps:
                raise TrajectoryError(f"{path} lists {self.num_steps} steps (0..{self.last_step}) but the store "
                                      f"holds {len(recorded)} step files; the manifest was edited or damaged")

    # -- metadata ------------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        return self.manifest["meta"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def num_steps(self) -> int:
        return len(self.manifest["steps"])

    @property
    def last_step(self) -> int:
        return self.num_steps - 1

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.manifest["tensors"]]

    @property
    def param_names(self) -> list[str]:
        return [t["name"] for t in self.manifest["tensors"] if t["kind"] == "param"]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {t["name"]: tuple(t["shape"]) for t in self.manifest["tensors"]}

    def model_config(self):
        """The model config this store records, for ``build_model`` (a zoo config or a factory).

        Raises ConfigError when it records a module without a factory to rebuild it (a
        ``TrajectoryRecorder`` given no ``model_factory``): ``--model`` must name one then.
        """
        from ..config import ConfigError
        from ..models import model_from_dict, rebuildable

        recorded = self.meta.get("model") or {}
        if not rebuildable(recorded):
            what = recorded.get("class", "a model")
            raise ConfigError(f"{self.location} records {what} without a factory to rebuild it; pass --model "
                              "package.module:function (or record with model_factory=...)")
        return model_from_dict(recorded)

    def data_config(self):
        """The DataConfig this store records; ConfigError when it records none (a recorder given no ``data``)."""
        from ..config import ConfigError, from_dict
        from ..data import DataConfig

        recorded = self.meta.get("data")
        if recorded is None:
            raise ConfigError(f"{self.location} records no data reference; pass --data package.module:function or "
                              "a bundled name (or record with data=...)")
        return from_dict(DataConfig, recorded, what=f"data config in the store {self.location}")

    def recipe(self):
        """The TrainConfig this store was trained with; TrainConfig's defaults for a store that records no
        recipe (one made by a ``TrajectoryRecorder``)."""
        from ..config import from_dict
        from ..train.recipe import TrainConfig  # upward, lazy: only readers of a training recipe need it

        return from_dict(TrainConfig, self.meta.get("recipe") or {})

    @property
    def digest(self) -> str:
        """The store's identity: a hash of its manifest, which lists every step's tensor checksums. A
        store retrained (another seed, other data) or edited has another digest."""
        import hashlib

        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()[:16]

    def step_info(self, step: int) -> dict:
        self._check_step(step)
        return self.manifest["steps"][step]

    # -- reading -------------------------------------------------------------------------------
    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.num_steps:
            raise TrajectoryError(
                f"step {step} is not in {self.location}, which holds steps 0..{self.last_step}"
                + ("" if self.complete else " and is unfinished (resume its training run to record more)")
            )

    def read(self, step: int, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Tensors of one step (all, or only ``names``), checked against their CRC32."""
        self._check_step(step)
        wanted = list(self._columns) if names is None else list(names)
        unknown = [n for n in wanted if n not in self._columns]
        if unknown:
            raise TrajectoryError(f"{self.location} has no tensors {unknown}")
        rel = self.manifest["steps"][step]["file"]
        location = fs.join(self.location, rel)
        if not fs.exists(location):
            raise TrajectoryError(f"step {step} is listed in {self.location} but its file {rel} is missing; "
                                  "the store was damaged or copied incompletely")
        filesystem, path = fs.resolve(location)
        try:
            with filesystem.open_input_file(path) as f:
                reader = ipc.open_file(f, options=ipc.IpcReadOptions(
                    included_fields=sorted(self._columns[n] for n in wanted)))
                if (reader.schema.metadata or {}).get(b"step") != str(step).encode():
                    raise TrajectoryError(f"{location} holds another step than {step}")
                batch = reader.get_batch(0)
                out = {}
                for field, col in zip(batch.schema, batch.columns):
                    out[field.name] = _decode(field, col, location)
        except TrajectoryError:
            raise
        except OSError as e:
            if _unreadable(e):  # the file is fine, this user may not read it: no "corrupt, re-record"
                raise PermissionError(errno.EACCES, f"cannot read step {step}: permission denied; make the store "
                                      "readable to this user (chmod -R u+r) or run as its owner", location) from None
            raise TrajectoryError(f"{location} is truncated or corrupt ({e}); re-record the run or restore "
                                  "the file from a copy") from e
        except (pa.ArrowException, ValueError, IndexError, KeyError, TypeError) as e:
            # Any damage to the file's bytes (found by fuzzing single bytes): one clear error.
            raise TrajectoryError(f"{location} is truncated or corrupt ({e}); re-record the run or restore "
                                  "the file from a copy") from e
        return {n: out[n] for n in wanted}

    def verify(self) -> None:
        """Read every step in full; raises TrajectoryError at the first damaged one."""
        for step in range(self.num_steps):
            self.read(step)


def _unreadable(e: OSError) -> bool:
    """An error of access (pyarrow puts the errno in its message only), not of content."""
    return e.errno in (errno.EACCES, errno.EPERM) or "permission denied" in str(e).lower()


def _check_manifest(path: str, manifest: dict) -> None:
    """The manifest's structure, so that a hand-edited or damaged one fails here and not with a KeyError."""
    problem = None
    if not isinstance(manifest.get("meta"), dict):
        problem = "no 'meta' record"
    elif not isinstance(manifest.get("steps"), list) or not all(
            isinstance(s, dict) and isinstance(s.get("step"), int) and isinstance(s.get("file"), str)
            for s in manifest["steps"]):
        problem = "no valid 'steps' list (each entry needs 'step' and 'file')"
    elif not isinstance(manifest.get("tensors"), list) or not all(
            isinstance(t, dict) and {"name", "shape", "dtype", "kind"} <= set(t) for t in manifest["tensors"]):
        problem = "no valid 'tensors' table"
    elif not isinstance(manifest.get("complete"), bool):
        problem = "no 'complete' flag"
    if problem:
        raise TrajectoryError(f"{path} is damaged: {problem}; re-record the run or restore the file from a copy")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``STORE[:STEP]`` -> (store location, step or None for the last); STORE may be a URI."""
    head, sep, tail = ref.rpartition(":")
    if sep and tail.isdigit() and head and not head.endswith(":/"):
        return head, int(tail)
    return ref, None


def open_ref(ref: str) -> tuple[TrajectoryStore, int | None]:
    """The store and step (None: the last) that ``STORE[:STEP]`` names. A store whose own name ends in
    ``:N`` (a folder ``run:1``) is that store, not step N of ``run``; when neither exists, the
    message says how the reference was read."""
    location, step = parse_ref(ref)
    if step is not None and not fs.exists(fs.join(location, MANIFEST)):
        if fs.exists(fs.join(ref, MANIFEST)):
            return TrajectoryStore(ref), None
        raise TrajectoryError(f"{location} is not a trajectory store (no {MANIFEST}); {ref!r} was read as "
                              f"STORE:STEP, step {step} of {location}. A store whose name ends in ':{step}' "
                              f"is read whole only where it exists: check the path")
    return TrajectoryStore(location), step


def read_state(ref: str) -> tuple[dict[str, torch.Tensor], TrajectoryStore, int]:
    """The full state at ``STORE[:STEP]`` (default: the last recorded step)."""
    store, step = open_ref(ref)
    step = store.last_step if step is None else step
    return store.read(step), store, step


def _decode(field: pa.Field, col: pa.FixedSizeListArray, location: str) -> torch.Tensor:
    try:
        meta = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        shape = json.loads(meta["shape"])
        dtype = _DTYPES[meta["dtype"]]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"bad shape {shape!r}")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise TrajectoryError(f"{location}: the metadata of tensor {field.name} is damaged ({e!r}); re-record the "
                              "run or restore the file from a copy") from e
    values = col.values.to_numpy(zero_copy_only=False)
    n = int(np.prod(shape)) if shape else 1
    values = values[:n] if n else values[:0]
    if str(zlib.crc32(values.tobytes())) != meta.get("crc32"):
        raise TrajectoryError(f"{location}: tensor {field.name} fails its checksum; the file is corrupt. "
                              "Re-record the run or restore the file from a copy")
    t = torch.from_numpy(values.copy())
    if dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    t = t.reshape(shape).to(dtype)
    # Every point read is checked: a NaN or inf in a source step would otherwise flow into the
    # transferred model, or be blamed on the target where it surfaces.
    if not is_finite(t):
        raise TrajectoryError(f"{location}: tensor {field.name} holds NaN or inf values; that recorded step of the "
                              "store diverged or is damaged. Re-record the run (e.g. with a lower --lr)")
    return t
