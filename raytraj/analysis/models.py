"""What the analysis commands compare: a model state, its architecture and the data it is scored on.

A model reference is any of

* a transfer run folder (``metrics.json`` + ``best.safetensors``): its best-on-val model;
* a trajectory store folder (``trajectory.json``): its last step, or ``STORE:STEP``;
* a ``.safetensors`` file that raytraj wrote (a run's ``best``/``final``), whose record names
  the trajectory store it came from;
* a bare ``.safetensors`` file of tensors (a state dict saved elsewhere): it takes its model and
  data from the other models compared (:func:`load_models`), and must have their tensors.

The store supplies the model config and the data config, so user models need nothing more
than a recorded run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..checkpoint import load_checkpoint
from ..config import ConfigError, from_dict
from ..data import DataConfig
from ..runfolder import RunFolder
from ..trajectory import TrajectoryStore, read_state


class AnalysisError(ConfigError):
    """Inputs an analysis cannot use (the CLI prints it as one line and exits 2)."""


@dataclass
class ModelRef:
    ref: str  # what the user wrote
    label: str  # short name for plots
    state: dict[str, torch.Tensor]
    model: dict | None  # model config as stored ({"name": ..., **fields}); None: a bare safetensors file
    data: dict | None  # data config as stored
    store: str | None  # the trajectory store the config comes from
    step: int | None


def _label(path: str, suffix: str = "") -> str:
    return os.path.basename(os.path.normpath(path)) + suffix


def load_model(ref: str) -> ModelRef:
    """The model ``ref`` names (see the module docstring)."""
    if ref.endswith(".safetensors"):
        state, info = load_checkpoint(ref)
        if "source" not in info:  # bare tensors: model and data come from the other models (load_models)
            return ModelRef(ref, _label(ref).removesuffix(".safetensors"), state, None, None, None, None)
        store = TrajectoryStore(info["source"])
        return ModelRef(ref, _label(os.path.dirname(ref) or ref, f"/{_label(ref).removesuffix('.safetensors')}"),
                        state, store.meta["model"], store.meta["data"], store.location, info.get("step"))
    if RunFolder(ref).has_model("best"):
        state, info = RunFolder(ref).load_model("best")
        store = TrajectoryStore(info["source"])
        return ModelRef(ref, _label(ref), state, store.meta["model"], store.meta["data"], store.location,
                        info.get("step"))
    state, store, step = read_state(ref)
    label = _label(store.location) + ("" if step == store.last_step else f":{step}")
    return ModelRef(ref, label, state, store.meta["model"], store.meta["data"], store.location, step)


def load_models(refs: list[str]) -> list[ModelRef]:
    """The models ``refs`` name; a bare ``.safetensors`` file takes the model and data of the first
    model that records them, and must hold exactly that model's tensors and shapes."""
    models = [load_model(r) for r in refs]
    donor = next((m for m in models if m.model is not None), None)
    for m in models:
        if m.model is not None:
            continue
        if donor is None:
            raise AnalysisError(f"{m.ref} holds bare tensors and no other model names an architecture and data; "
                                "pass at least one run folder, STORE[:STEP] or raytraj .safetensors")
        _check_tensors_fit(m, donor)
        m.state = {k: v.to(donor.state[k].dtype) for k, v in m.state.items()}
        m.model, m.data, m.store = donor.model, donor.data, donor.store
    return models


def _check_tensors_fit(bare: ModelRef, donor: ModelRef) -> None:
    want, have = donor.state, bare.state
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    shapes = [f"{k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}" for k in want
              if k in have and have[k].shape != want[k].shape]
    floats = [k for k in want if k in have and want[k].is_floating_point() != have[k].is_floating_point()]
    if missing or extra or shapes or floats:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                 "wrong shapes " + ", ".join(shapes[:3]) if shapes else "",
                 f"integer/float mismatch {floats[:3]}" if floats else ""]
        name = donor.model.get("name", "?")
        raise AnalysisError(f"the tensors of {bare.ref} do not fit the {name} model of {donor.ref} ("
                            + "; ".join(p for p in parts if p) + "); give a state dict of that architecture")


def check_same_architecture(models: list[ModelRef]) -> None:
    """One model config, and one tensor table, for every model compared."""
    first = models[0]
    for other in models[1:]:
        if other.model != first.model:
            diff = sorted(k for k in set(first.model) | set(other.model) if first.model.get(k) != other.model.get(k))
            raise AnalysisError(
                f"{other.ref} and {first.ref} are models of different architectures (they differ in "
                + ", ".join(f"{k}: {other.model.get(k)!r} vs {first.model.get(k)!r}" for k in diff)
                + "); compare models of one architecture")
        bad = [k for k in first.state if k not in other.state or other.state[k].shape != first.state[k].shape]
        if bad or set(other.state) - set(first.state):
            raise AnalysisError(f"{other.ref} and {first.ref} hold different tensors ({(bad or ['extra'])[:3]}); "
                                "compare models of one architecture")


def check_data_fits(model: dict, dataset) -> None:
    """The model takes the data's inputs and predicts its classes (a --data override can break either)."""
    from ..models import build_model, model_from_dict

    net = build_model(model_from_dict(model), 0)
    try:
        with torch.no_grad():
            out = net.eval()(dataset.x["train"][:2])
    except RuntimeError as e:
        raise AnalysisError(f"the models do not take the inputs of {dataset.config.describe()} "
                            f"(shape {tuple(dataset.input_shape)}): {str(e).splitlines()[0]}; score them on the "
                            "data they were trained on") from e
    if out.shape[1] != dataset.num_classes:
        raise AnalysisError(f"the models predict {out.shape[1]} classes but {dataset.config.describe()} has "
                            f"{dataset.num_classes}; score them on data with their classes")


def data_config(models: list[ModelRef], data: str | None = None) -> DataConfig:
    """The data the models are scored on: ``data`` if given, else the first model's."""
    from ..data.config import parse_data

    if data is not None:
        return parse_data(data)
    return from_dict(DataConfig, models[0].data, what=f"data config of {models[0].store}")
