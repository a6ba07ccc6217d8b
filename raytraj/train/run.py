"""``raytraj train``: a model from the zoo, data by name, a recipe, and an optional init."""

from __future__ import annotations

from ..config import from_dict
from ..data import load_data
from ..models import HEAD, config_for_data
from ..recorded import check_model_takes_data, data_config
from ..trajectory import read_state
from .loop import TrainResult, train
from .recipe import TrainConfig


def train_from_args(model: str, data: str, out: str, *, seed: int = 0, init: str | None = None,
                    new_head: bool = False, model_args: dict | None = None, progress: bool = True,
                    data_args: dict | None = None, head: str = HEAD, **recipe) -> TrainResult:
    """Train ``model`` on ``data`` and record it at ``out``; ``recipe`` holds TrainConfig fields.

    Args:
        model: a zoo model name, or a factory ``package.module:function`` (``model_args`` its kwargs).
        data: bundled data (``digits``, ...) or a data function ``package.module:function``
            (``data_args`` its kwargs).
        head: the classifier's module name, for ``new_head``.

    Returns:
        the TrainResult: the store's location, val accuracy per checkpoint, test accuracy, timings.
    """
    dataset = load_data(data_config(data, data_args))
    model_cfg = config_for_data(model, dataset.input_shape, dataset.num_classes, **(model_args or {}))
    check_model_takes_data(model_cfg, dataset)
    cfg = from_dict(TrainConfig, recipe, what="training recipe")
    init_state, init_info = None, None
    if init:
        init_state, store, step = read_state(init)
        init_info = {"store": store.location, "step": step}
    return train(model_cfg, dataset, cfg, seed, out, init=init_state, init_info=init_info, new_head=new_head,
                 progress=progress, head=head)
