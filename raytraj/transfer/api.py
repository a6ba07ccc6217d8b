"""The Python API of a transfer: models and data as objects, no files needed.

    result = raytraj.transfer_model(source="runs/src", target=my_init_model, data=my_splits,
                                    config=TransferConfig(method="fgmt", steps=30))
    result.model, result.metrics, result.perm

It prepares the same ``Problem`` and runs the same engine as ``raytraj transfer``; with ``out=``
it writes the same run folder, otherwise it works in a temporary folder it removes afterwards.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import ConfigError
from ..models import HEAD, rebuildable
from ..perm import Permutation, perm_from_lists
from ..ray_config import RayConfig
from ..runfolder import RunFolder
from .config import TransferConfig
from .problem import open_source, prepare
from .run import transfer as run_transfer_folder


@dataclass
class TransferResult:
    """What ``transfer_model`` returns.

    Args:
        model: the best-on-val transferred model.
        metrics: as in the run folder's metrics.
        perm: the permutation of the best step.
        final_state: the model's state at step T.
        out: the run folder, when one was asked for.
    """

    model: nn.Module  # the best-on-val transferred model (a copy of the target's architecture)
    metrics: dict  # as in metrics.json
    perm: Permutation  # the permutation of the best step
    final_state: dict[str, torch.Tensor]  # the model at step T
    out: str | None  # the run folder, when one was asked for


def transfer_model(source: str, target: nn.Module | None = None, data=None, config: TransferConfig | None = None,
                   backend: str = "local", out: str | None = None, *, target_seed: int | None = None, spec=None,
                   device=None, ray_config: RayConfig | None = None, progress: bool = False,
                   force: bool = False) -> TransferResult:
    """Transfer the trajectory at ``source`` onto ``target``'s weights.

    Args:
        source: a complete trajectory store (from ``raytraj train`` or a ``TrajectoryRecorder``).
        target: the model whose current weights are the target init. Its architecture must be the source's.
            When the store records no model factory, a copy of it is also the model the transfer runs.
        data: the data, if not the one the store records: a ``{"train": (x, y), "val": ..., "test": ...}``
            mapping (or torch Datasets), a Dataset, or a data string such as ``"mypkg.data:load"``.
        config: the transfer settings (default ``TransferConfig()``: FGMT, 30 steps).
        backend: ``"local"`` or ``"ray"`` (Ray needs the model to be rebuildable: a store with a factory).
        out: a run folder to write (as ``raytraj transfer --out``); default: none kept.
        target_seed: instead of ``target``, a fresh init of the store's model factory with this seed.
        spec: a PermutationSpec (or a function of the model returning one) instead of inference.
        device: the local backend's device (default: a GPU when there is one).
        ray_config: the Ray backend's workers and cluster, e.g. ``RayConfig(workers=2)``.
        progress: show a progress bar.
        force: transfer a source that ends at chance level, or with a spec that permutes less than
            ``config.min_coverage`` of the model, which are otherwise refused.

    Returns:
        A TransferResult with the best model, the metrics and the permutation.
    """
    cfg = config or TransferConfig()
    if (target is None) == (target_seed is None):
        raise ConfigError("give exactly one of target (a module holding the target init) or target_seed")
    store = open_source(source)
    model = None
    if target is not None:
        if not isinstance(target, nn.Module):
            raise ConfigError(f"target must be a torch.nn.Module, got {type(target).__name__}")
        if not rebuildable(store.meta.get("model")):
            model = copy.deepcopy(target).cpu()
    state = None if target is None else {k: v.detach().cpu().clone() for k, v in target.state_dict().items()}
    problem = prepare(source, cfg, target_seed=target_seed, target_state=state, model=model, data=data, spec=spec,
                      head=HEAD, force=force)
    with tempfile.TemporaryDirectory(prefix="raytraj-transfer-") as tmp:
        folder = out or tmp
        metrics = run_transfer_folder(source, folder, cfg, target_seed=target_seed, backend=backend,
                                      device=device, ray_config=ray_config, progress=progress, problem=problem,
                                      model=model, data=data, spec=spec)
        run = RunFolder(folder)
        best, _ = run.load_model("best")
        final, _ = run.load_model("final")
        perm = perm_from_lists(run.perm()["best"])
    result_model = copy.deepcopy(target).cpu() if target is not None else copy.deepcopy(_template(problem))
    result_model.load_state_dict(best)
    return TransferResult(result_model, metrics, perm, final, out)


def _template(problem) -> nn.Module:
    from ..models import build_model

    return build_model(problem.model_cfg, 0)
