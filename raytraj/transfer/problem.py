"""Everything a transfer needs, read and checked before any work starts.

From the source store: the model config, the data, and the trajectory to follow. From the
arguments: the target init (a seed, or a pre-trained checkpoint with an optional new head)
and, for Oracle, the trained target to weight-match. The permutation spec is inferred from
the model and proved on it with ``check_spec`` before use.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError, check_seed
from ..data import DataConfig, Dataset
from ..evaluation import at_chance_level, chance_accuracy
from ..imports import resolve
from ..models import HEAD, architecture, build_model
from ..perm import Permutation, PermutationSpec, SpecError, check_spec, infer_spec, match
from ..perm.coverage import Coverage, spec_coverage
from ..perm.infer import SpecInferenceError
from ..recorded import check_model_takes_data, data_of, model_of
from ..train import initial_state
from ..trajectory import Trajectory, TrajectoryError, TrajectoryStore, open_trajectory, read_state
from ..trajectory.recorder import RECORDER
from ..trajectory.store import MANIFEST
from .config import TransferConfig


@dataclass
class Problem:
    source: str
    source_meta: dict
    model_cfg: Any
    data_cfg: DataConfig
    data: Dataset
    spec: PermutationSpec
    trajectory: Trajectory
    target_init: dict[str, torch.Tensor]
    target: dict  # how the target init was made, for the record
    oracle_perm: Permutation | None = None

    @property
    def num_steps(self) -> int:
        return self.trajectory.num_steps

    @property
    def param_names(self) -> list[str]:
        return self.trajectory.param_names


def open_source(source: str) -> TrajectoryStore:
    store = TrajectoryStore(source)
    if not store.complete:
        raise TrajectoryError(f"source {source} is an unfinished training run; resume it first "
                              "(`raytraj train` with the same arguments)")
    if store.num_steps < 2:
        raise TrajectoryError(f"source {source} holds no trained step")
    # A TrajectoryRecorder store has no recipe (the user's loop is the recipe), and may name no model
    # or data (then --model / --data supply them); a `raytraj train` store has all three.
    needed = {"model", "data"} if RECORDER in store.meta else {"model", "data", "recipe"}
    lacking = sorted(needed - set(store.meta))
    if lacking:
        raise TrajectoryError(f"source {source}: its {MANIFEST} lacks {lacking} in 'meta'; it was not recorded "
                              "by `raytraj train`, or it was edited")
    return store


def infer_checked_spec(model_cfg, data: Dataset, spec=None) -> PermutationSpec:
    """The spec inferred from the model, or ``spec`` (a PermutationSpec, a function of the model, or
    the import path of either), proved on the model with check_spec either way."""
    model = build_model(model_cfg, 0)
    example = data.x["train"][:8]
    given = spec
    if isinstance(spec, str):
        spec = resolve(spec, "spec")
    if spec is None:
        try:
            spec = infer_spec(model, example)
        except SpecInferenceError as e:
            raise ConfigError(f"cannot infer the permutation spec ({e}); write one and pass --spec "
                              "package.module:function") from e
    elif not isinstance(spec, PermutationSpec):
        if not callable(spec):
            raise ConfigError(f"spec {given!r} is a {type(spec).__name__}; give a PermutationSpec or a function of "
                              "the model returning one")
        spec = spec(model)
        if not isinstance(spec, PermutationSpec):
            raise ConfigError(f"spec {given!r} returned a {type(spec).__name__}, not a PermutationSpec")
    try:
        check_spec(model, spec, example)
    except SpecError as e:
        where = f"spec {given}" if isinstance(given, str) else ("the given spec" if given is not None else
                                                                "the inferred spec")
        raise SpecError(f"{where} fails check_spec: {e}") from e
    return spec


class CoverageWarning(UserWarning):
    """A forced transfer whose spec permutes less of the model than ``min_coverage`` asks."""

    one_line = True  # the CLI prints it as one line


def identity_spec(model_cfg) -> PermutationSpec:
    """A spec that permutes nothing: all Naive needs."""
    state = build_model(model_cfg, 0).state_dict()
    return PermutationSpec(axes={k: (None,) * v.dim() for k, v in state.items()},
                           shapes={k: tuple(v.shape) for k, v in state.items()})


def coverage_of(spec: PermutationSpec, model, data: Dataset) -> Coverage:
    """spec_coverage with the lengths the data fixes: the classes, and the input's features (its first or
    last axis, or all of it flattened)."""
    shape = data.input_shape
    fixed = {data.num_classes} | ({shape[0], shape[-1], math.prod(shape)} if shape and
                                  data.x["train"].is_floating_point() else set())
    return spec_coverage(spec, model, fixed=fixed)


def check_coverage(spec: PermutationSpec, model_cfg, data: Dataset, cfg: TransferConfig, force: bool) -> Coverage:
    """Refuse a matching method whose spec permutes less than ``cfg.min_coverage`` of the tensors
    (nothing at all: the method would equal Naive); with ``force``, warn in one line instead."""
    cov = coverage_of(spec, build_model(model_cfg, 0), data)
    if cov.tensors_permuted and cov.share >= cfg.min_coverage:
        return cov
    method = {"oracle": "Oracle"}.get(cfg.method, cfg.method.upper())
    what = f"{cov.tensors_permuted} of {cov.tensors} tensors permutable"
    if cov.tensors_permuted == 0:
        msg = f"{what}: {method} would equal Naive"
    else:
        msg = (f"{what} ({100 * cov.share:.0f}%, below min_coverage {cfg.min_coverage:g}): {method} would leave "
               f"{', '.join(cov.names_unpermuted[:3])}{' ...' if len(cov.names_unpermuted) > 3 else ''} as Naive does")
    if force:
        warnings.warn(msg, CoverageWarning, stacklevel=2)
        return cov
    raise ConfigError(f"{msg}; pass a spec that permutes more (--spec package.module:function), lower "
                      "--min-coverage, or pass --force to run it anyway")


def _same_architecture(source: str, other: str, source_meta: dict, other_meta: dict, role: str) -> None:
    """Same zoo model or factory; sizes are checked tensor by tensor where the states meet."""
    a, b = architecture(source_meta["model"]), architecture(other_meta["model"])
    if a != b:
        raise ConfigError(f"{role} {other} is a {b!r} model but the source {source} is a {a!r} model; a trajectory "
                          "only transfers between models of one architecture")


def refuse_untrained_source(source: str, meta: dict, data: Dataset) -> None:
    """A source that ends at chance level has no learning to transfer: every method would "work"."""
    val = meta.get("val_acc") or []
    if not val:  # recorded without validation (e.g. by another training loop): nothing to judge by
        return
    chance = chance_accuracy(data, "val")
    if at_chance_level(val[-1], chance):
        raise ConfigError(f"source {source} ends at chance level (val {val[-1]:.1f}%, most frequent class "
                          f"{chance:.1f}%), so there is nothing to transfer; retrain it (another --lr or more "
                          "--epochs), or pass --force to transfer it anyway")


def prepare(source: str, cfg: TransferConfig, *, target_seed: int | None = None, target_init: str | None = None,
            new_head: bool = False, oracle_target: str | None = None, model=None, data=None, spec=None,
            head: str = HEAD, target_state: dict | None = None, force: bool = False) -> Problem:
    """Read and check everything a transfer needs.

    Args:
        source: the source trajectory store.
        cfg: the transfer settings.
        target_seed / target_init / target_state: the target init (exactly one): a seed for the model's
            factory, a store ``STORE[:STEP]``, or a state dict (the Python API's target module).
        new_head: with ``target_init``: re-initialise the module ``head``.
        oracle_target: for Oracle, the target trained with the source's recipe.
        model: a model config (or module) to use instead of the store's; it must have the store's tensors.
        data: data to use instead of the store's (a data string, DataConfig, Dataset or splits mapping).
        spec: a PermutationSpec (or a function of the model, or an import path) instead of inference.
        head: the classifier's module name, for ``new_head``.
        force: transfer a source that ends at chance level, or with a spec that permutes less than
            ``cfg.min_coverage`` of the model, which are otherwise refused.
    """
    if sum(x is not None for x in (target_seed, target_init, target_state)) != 1:
        raise ConfigError("give exactly one of --target-seed (a random init) or --target-init STORE[:STEP]")
    if new_head and target_init is None:
        raise ConfigError("--new-head goes with --target-init (a pre-trained target)")
    store = open_source(source)
    meta = store.meta
    model_cfg = model_of(store, model)
    data = data_of(store, data)
    data_cfg = data.config
    check_model_takes_data(model_cfg, data)
    if not force:
        refuse_untrained_source(source, meta, data)
    trajectory = open_trajectory(source, cfg.schedule, cfg.steps)  # with "actual", steps must match the record
    if cfg.method == "naive" and spec is None:
        spec = identity_spec(model_cfg)  # pi = identity: nothing to infer, nothing to prove
    else:
        spec = infer_checked_spec(model_cfg, data, spec)
        check_coverage(spec, model_cfg, data, cfg, force)

    if target_seed is not None:
        check_seed("--target-seed", target_seed)
        init = initial_state(model_cfg, target_seed, None, False)
        target = {"seed": target_seed}
    elif target_state is not None:
        try:
            init = initial_state(model_cfg, cfg.seed, target_state, False)
        except ConfigError as e:
            raise ConfigError(f"the target model: {e}") from e
        target = {"module": True}
    else:
        state, target_store, step = read_state(target_init)
        _same_architecture(source, target_init, meta, target_store.meta, "target init")
        try:
            init = initial_state(model_cfg, cfg.seed, state, new_head, head=head)
        except ConfigError as e:
            raise ConfigError(f"target init {target_init}: {e}") from e
        target = {"init": target_store.location, "step": step, "new_head": new_head}
    spec.check_tensors(init, complete=True, what="target init")
    refuse_source_init(source, store, init, target)

    oracle_perm = None
    if cfg.method == "oracle":
        if not oracle_target:
            raise ConfigError("method oracle needs --oracle-target DIR: the target init actually trained with "
                              "the source's recipe")
        oracle_perm = oracle_permutation(source, store, oracle_target, init, spec, cfg.seed)
        target["oracle_target"] = oracle_target
    elif oracle_target:
        raise ConfigError("--oracle-target is only used by --method oracle")
    return Problem(source, meta, model_cfg, data_cfg, data, spec, trajectory, init, target, oracle_perm)


def refuse_source_init(source: str, store: TrajectoryStore, init: dict, target: dict, start: dict | None = None) -> None:
    """A target init equal to the source's own init (``start``, read here if not given) only replays
    the source: the result means nothing."""
    start = store.read(0, store.param_names) if start is None else start
    if all(k in init and init[k].shape == v.shape and torch.equal(init[k], v) for k, v in start.items()):
        how = (f"--target-seed {target['seed']}" if "seed" in target else "the target module" if
               target.get("module") else f"--target-init {target.get('init')}")
        raise ConfigError(f"the target init ({how}) equals the init of the source {source} (its step 0), so the "
                          "transfer would only replay the source; choose another --target-seed or --target-init")


def check_targets(source: str, targets: list[dict], seed: int = 0) -> None:
    """Before starting Tune trials: the source must have learned something (its trials would each refuse it
    otherwise), and each target (``target_seed``, or ``target_init`` with ``new_head``) must differ from the
    source's init."""
    store = open_source(source)
    model_cfg = model_of(store)  # its model can be rebuilt here (a factory that imports, with the store's shapes)
    refuse_untrained_source(source, store.meta, data_of(store))
    start = store.read(0, store.param_names)  # once, not per target: ensembles may have thousands
    # A store `raytraj train` made from a seed (no --init) starts where its factory seeded with that
    # seed starts, and nowhere another seed does: only that seed needs building.
    seeded = store.meta.get("seed") if not store.meta.get("init") else None
    for t in targets:
        if t.get("target_seed") is not None:
            check_seed("--target-seed", t["target_seed"])
            if seeded is not None and t["target_seed"] != seeded:
                continue
            init, target = initial_state(model_cfg, t["target_seed"], None, False), {"seed": t["target_seed"]}
        else:
            state, _, _ = read_state(t["target_init"])
            init = initial_state(model_cfg, seed, state, bool(t.get("new_head")))
            target = {"init": t["target_init"]}
        refuse_source_init(source, store, init, target, start)


def oracle_permutation(source: str, store: TrajectoryStore, oracle_target: str, target_init, spec, seed: int):
    """Weight-match the trained target's total displacement to the source's (paper-notes section 7)."""
    oracle = open_source(oracle_target)
    _same_architecture(source, oracle_target, store.meta, oracle.meta, "oracle target")
    params = store.param_names
    start = oracle.read(0, params)
    for name in params:
        if start[name].shape != target_init[name].shape or not torch.allclose(start[name], target_init[name]):
            raise ConfigError(f"oracle target {oracle_target} does not start at the target init ({name} differs); "
                              "train it from the same --seed / --init as the transfer's target")
    end = oracle.read(oracle.last_step, params)
    src0, src1 = store.read(0, params), store.read(store.last_step, params)
    target = {k: end[k] - start[k] for k in params}
    source_disp = {k: src1[k] - src0[k] for k in params}
    perm, _ = match(spec, [(target, source_disp)], seed=seed)
    return perm
