"""Derive a PermutationSpec by tracing a model with torch.fx.

Every tensor axis that could carry a permutation is a variable: each axis of each parameter or
buffer, and the channel axis (dim 1) of each activation. Each op in the traced graph states which
variables must share one permutation, and a union-find merges them. The roots that survive
become the groups.

Some variables are *frozen* (never permuted): the model input's channels, the model output's
classes, and anything an op touches that this module does not understand. A frozen variable
freezes everything merged with it, so an unknown op can only make the spec more conservative,
never wrong. Each freeze caused by an op is reported in ``spec.unpermuted`` and as a warning.
"""

from __future__ import annotations

import copy
import math
import operator
import warnings
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from .spec import PermutationSpec


class SpecInferenceError(RuntimeError):
    """The model could not be traced, so no spec can be derived."""


class SpecInferenceWarning(UserWarning):
    """Inference left some axes unpermuted because an op was not understood."""


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    # Softmax over classes is permutation-equivariant, and over any other axis it acts per channel.
    nn.Softmax, nn.LogSoftmax,
)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, torch.neg, torch.abs, torch.exp,
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.leaky_relu, F.elu, F.hardtanh, F.softplus, F.dropout,
    F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, operator.neg,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "tanh", "sigmoid", "neg", "abs", "exp", "contiguous", "clone", "softmax", "log_softmax",
}
_BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_CAT_FUNCTIONS = {torch.cat, torch.concat}


def _slices_batch_only(index) -> bool:
    """x[a:b] or x[a:b, :, ...]: rows are selected, every channel is kept in order."""
    if isinstance(index, slice):
        return True
    return (
        isinstance(index, tuple) and len(index) >= 2 and isinstance(index[0], slice)
        and index[1] == slice(None) and not any(i is None or i is Ellipsis for i in index)
    )


class _UnionFind:
    def __init__(self):
        self.parent: dict[Any, Any] = {}
        self.frozen: set[Any] = set()

    def add(self, v):
        self.parent.setdefault(v, v)

    def find(self, v):
        self.add(v)
        while self.parent[v] != v:
            self.parent[v] = self.parent[self.parent[v]]
            v = self.parent[v]
        return v

    def union(self, a, b):
        if a is None or b is None:
            return
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.frozen:
                self.frozen.add(ra)

    def freeze(self, v):
        if v is not None:
            self.frozen.add(self.find(v))

    def is_frozen(self, v) -> bool:
        return self.find(v) in self.frozen


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.uf = _UnionFind()
        self.notes: list[str] = []
        self.used: set[str] = set()

    # -- variables ---------------------------------------------------------------------------
    def chan(self, node):
        """The channel-axis variable of an activation, or None when it has no channel axis."""
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        v = ("act", node.name)
        self.uf.add(v)
        return v

    def tensor_axis(self, name: str, axis: int):
        self.used.add(name)
        v = ("tensor", name, axis)
        self.uf.add(v)
        return v

    def freeze(self, nodes, reason: str | None, tensors=()):
        """Freeze the channels of ``nodes`` and every axis of ``tensors``.

        The reason is reported only when this freezes something that was still permutable
        upstream: freezing what follows the already-fixed input costs nothing.
        """
        *inputs, _ = nodes if nodes else [None]
        tensor_vars = [self.tensor_axis(name, a) for name in tensors for a in range(len(self._state_shapes[name]))]
        upstream = [self.chan(n) for n in inputs] + tensor_vars
        loses = any(v is not None and not self.uf.is_frozen(v) for v in upstream)
        for v in [self.chan(n) for n in nodes] + tensor_vars:
            self.uf.freeze(v)
        if reason and loses:
            self.notes.append(reason)

    # -- the walk ----------------------------------------------------------------------------
    def run(self, example_input) -> PermutationSpec:
        model = copy.deepcopy(self.model).eval()
        self._state_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 - fx raises many kinds; all mean "not traceable"
            raise SpecInferenceError(
                f"torch.fx could not trace {type(self.model).__name__}: {e}. Write the spec by hand with "
                "PermutationSpec.from_axes, or make forward() free of data-dependent control flow."
            ) from e
        inputs = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
        self.modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            self.visit(node)
        return self.build()

    def visit(self, node):
        tensor_inputs = [n for n in node.all_input_nodes if _shape(n) is not None]
        if node.op == "placeholder":
            self.freeze([node], None)  # input features are fixed by the data
        elif node.op == "output":
            self.freeze(tensor_inputs, None)  # classes are fixed by the labels
        elif node.op == "get_attr":
            name = node.target
            tensors = [k for k in self._state_shapes if k == name]
            self.freeze([node], f"{name}: used directly in forward(), left unpermuted", tensors)
        elif node.op == "call_module":
            self.visit_module(node, self.modules[node.target], tensor_inputs)
        elif node.op in ("call_function", "call_method"):
            self.visit_function(node, tensor_inputs)

    def visit_module(self, node, mod: nn.Module, inputs):
        x = inputs[0] if inputs else None
        prefix = node.target + "."
        own = [k for k in self._state_shapes if k.startswith(prefix) and "." not in k[len(prefix):]]
        t = lambda attr, axis: self.tensor_axis(prefix + attr, axis)  # noqa: E731
        if isinstance(mod, nn.Linear) and len(_shape(x)) == 2:
            self.uf.union(self.chan(x), t("weight", 1))
            self.uf.union(self.chan(node), t("weight", 0))
            if mod.bias is not None:
                self.uf.union(self.chan(node), t("bias", 0))
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == 1:
            self.uf.union(self.chan(x), t("weight", 1))
            self.uf.union(self.chan(node), t("weight", 0))
            if mod.bias is not None:
                self.uf.union(self.chan(node), t("bias", 0))
            for axis in range(2, mod.weight.dim()):
                self.uf.freeze(t("weight", axis))
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and mod.groups == mod.in_channels == mod.out_channels:
            # depthwise: each output channel reads only its own input channel
            self.uf.union(self.chan(x), self.chan(node))
            self.uf.union(self.chan(node), t("weight", 0))
            for axis in range(1, mod.weight.dim()):
                self.uf.freeze(t("weight", axis))
            if mod.bias is not None:
                self.uf.union(self.chan(node), t("bias", 0))
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            self.uf.union(self.chan(x), self.chan(node))
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mod, attr, None) is not None:
                    self.uf.union(self.chan(node), t(attr, 0))
            if getattr(mod, "num_batches_tracked", None) is not None:
                self.used.add(prefix + "num_batches_tracked")
        elif isinstance(mod, nn.LayerNorm) and len(_shape(x)) == 2 and len(mod.normalized_shape) == 1:
            self.uf.union(self.chan(x), self.chan(node))
            for attr in ("weight", "bias"):
                if getattr(mod, attr, None) is not None:
                    self.uf.union(self.chan(node), t(attr, 0))
        elif isinstance(mod, nn.GroupNorm) and mod.num_groups in (1, mod.num_channels):
            # one group normalises over all channels and one group per channel normalises each
            # alone: both are permutation-equivariant; other group counts are not.
            self.uf.union(self.chan(x), self.chan(node))
            if mod.affine:
                self.uf.union(self.chan(node), t("weight", 0))
                self.uf.union(self.chan(node), t("bias", 0))
        elif isinstance(mod, _ELEMENTWISE_MODULES + _POOL_MODULES) and not own:
            self.uf.union(self.chan(x), self.chan(node))
        elif isinstance(mod, nn.Flatten):
            self.reshape(node, x)
        else:
            self.freeze(
                inputs + [node],
                f"{node.target} ({type(mod).__name__}): module not understood, its tensors and "
                "the channels around it are left unpermuted",
                own,
            )

    def visit_function(self, node, inputs):
        f = node.target
        is_method = node.op == "call_method"
        if _shape(node) is None:
            return  # sizes, shapes, dims: no tensor flows out, so nothing to relate
        if (f in _ELEMENTWISE_FUNCTIONS) or (is_method and f in _ELEMENTWISE_METHODS):
            self.uf.union(self.chan(inputs[0]), self.chan(node))
        elif (f in _BINARY_FUNCTIONS) or (is_method and f in _BINARY_METHODS):
            self.binary(node, inputs)
        elif (f in _RESHAPE_FUNCTIONS) or (is_method and f in _RESHAPE_METHODS):
            self.reshape(node, inputs[0])
        elif (f in _REDUCE_FUNCTIONS) or (is_method and f in _REDUCE_METHODS):
            self.reduce(node, inputs[0])
        elif f in _CAT_FUNCTIONS:
            self.cat(node, inputs)
        elif f is operator.getitem and _slices_batch_only(node.args[1]):
            self.uf.union(self.chan(inputs[0]), self.chan(node))
        else:
            name = f if isinstance(f, str) else getattr(f, "__name__", repr(f))
            self.freeze(inputs + [node], f"{node.name} ({name}): op not understood, the channels around it "
                                         "are left unpermuted")

    # -- op rules ----------------------------------------------------------------------------
    def binary(self, node, inputs):
        out = _shape(node)
        for n in inputs:
            s = _shape(n)
            if len(s) == len(out) and s[1] == out[1]:
                self.uf.union(self.chan(n), self.chan(node))
            elif len(s) == len(out) and s[1] == 1:
                continue  # broadcast along channels: any permutation leaves it alone
            else:
                self.freeze(inputs + [node], f"{node.name}: broadcast of shape {s} against {out} is not "
                                             "understood, the channels around it are left unpermuted")
                return

    def reshape(self, node, x):
        """Keep the channel axis when batch and channel survive, or when the channel is flattened alone."""
        before, after = _shape(x), _shape(node)
        if len(before) >= 2 and len(after) >= 2 and before[0] == after[0]:
            if after[1] == before[1] and math.prod(after[2:]) == math.prod(before[2:]):
                self.uf.union(self.chan(x), self.chan(node))
                return
            if len(after) == 2 and after[1] == math.prod(before[1:]) and math.prod(before[2:]) == 1:
                self.uf.union(self.chan(x), self.chan(node))
                return
        spatial = math.prod(before[2:]) if len(before) > 2 else 1
        reason = (
            f"{node.name}: flatten of {before[1]} channels x {spatial} positions into {after}; the "
            "channels are left unpermuted (pool to 1x1 before flattening to permute them)"
            if len(after) == 2 and len(before) > 2
            else f"{node.name}: reshape {before} -> {after} is not understood, the channels are left unpermuted"
        )
        self.freeze([x, node], reason)

    def reduce(self, node, x):
        before, after = _shape(x), _shape(node)
        if len(after) >= 2 and after[:2] == before[:2]:
            self.uf.union(self.chan(x), self.chan(node))
        else:
            self.freeze([x, node], f"{node.name}: reduction {before} -> {after} over batch or channels, "
                                   "the channels are left unpermuted")

    def cat(self, node, inputs):
        out = _shape(node)
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        dim = dim % len(out)
        if dim != 1:
            for n in inputs:
                self.uf.union(self.chan(n), self.chan(node))
        else:
            # The joined channel axis holds several groups side by side, which one group cannot
            # describe, so the inputs' groups stay unpermuted.
            self.freeze(inputs + [node], f"{node.name}: concatenation along channels, the joined "
                                         "groups are left unpermuted")

    # -- result ------------------------------------------------------------------------------
    def build(self) -> PermutationSpec:
        unused = [k for k in self._state_shapes if k not in self.used]
        for name in unused:
            if len(self._state_shapes[name]) > 0:
                self.notes.append(f"{name}: not used in forward(), left unpermuted")
        names: dict[Any, str] = {}
        taken: set[str] = set()
        axes = {}
        for name, shape in self._state_shapes.items():
            entry = []
            for axis in range(len(shape)):
                v = ("tensor", name, axis)
                if name in unused or v not in self.uf.parent or self.uf.is_frozen(v):
                    entry.append(None)
                    continue
                root = self.uf.find(v)
                if root not in names:
                    base = name.rsplit(".", 1)[0] if axis == 0 else f"{name}:{axis}"
                    label, i = base, 1
                    while label in taken:
                        i += 1
                        label = f"{base}#{i}"
                    names[root] = label
                    taken.add(label)
                entry.append(names[root])
            axes[name] = tuple(entry)
        notes = tuple(dict.fromkeys(self.notes))
        if notes:
            warnings.warn(
                "infer_spec left axes unpermuted:\n  " + "\n  ".join(notes), SpecInferenceWarning, stacklevel=3
            )
        return PermutationSpec(axes=axes, shapes=self._state_shapes, unpermuted=notes)


def infer_spec(model: nn.Module, example_input) -> PermutationSpec:
    """The permutation spec of ``model``, derived by tracing it on ``example_input``.

    Covers parameters and buffers. The input's feature axis and the output's class axis are never
    permuted; ops that are not understood leave the axes they touch unpermuted and are reported
    in ``spec.unpermuted``. Verify the result with :func:`check_spec`.
    """
    return _Tracer(model).run(example_input)
