"""How an example input reaches a model, and which of its outputs stands for the model's answer.

Inference and the proof run the model on one example batch. The batch may be one tensor of any
dtype (token ids stay integers), a tuple of positional inputs, or a dict of keyword inputs (a
tokenizer's output). A model may return a tensor, a tuple or list, a dict, or a Hugging Face
``ModelOutput`` (a dict): its answer is the ``logits`` entry when there is one, else the first tensor.
"""

from __future__ import annotations

from typing import Any

import torch


def call_args(example_input) -> tuple[tuple, dict]:
    """(args, kwargs) to call a model with: a dict is keywords, a tuple positionals, anything else one input."""
    if isinstance(example_input, dict):
        return (), dict(example_input)
    if isinstance(example_input, tuple):
        return example_input, {}
    return (example_input,), {}


def map_tensors(value, fn):
    """``value`` with ``fn`` applied to every tensor inside tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(v, fn) for v in value) if not hasattr(value, "_fields") else \
            type(value)(*(map_tensors(v, fn) for v in value))
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def primary_output(out: Any) -> torch.Tensor | None:
    """The tensor that stands for the model's answer: ``out`` itself, its ``logits``, or its first tensor."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        return None
    for v in values:
        found = primary_output(v)
        if found is not None:
            return found
    return None
