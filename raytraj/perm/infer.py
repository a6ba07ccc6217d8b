"""Derive a PermutationSpec by tracing a model with torch.fx.

Every tensor axis is a variable: each axis of each parameter or buffer, and each axis of each
activation. Each op in the traced graph states which variables must share one permutation, and a
union-find merges them. The roots that survive become the groups.

A reshape that splits one axis into two, (B, T, H*d) -> (B, T, H, d), or merges two back, records
that the long axis is *segmented*: its variable is the pair (blocks, within-block) of the two
short axes. That is how attention heads are found: q, k, v and the output projection meet the
head axis and the head_dim axis only through such reshapes, and q @ k^T, softmax, attn @ v and
``F.scaled_dot_product_attention`` relate those short axes like any other.

Some variables are *frozen* (never permuted): every axis of the model input (features and
positions) and of the model output (classes), and anything an op touches that this module does
not understand. A frozen variable freezes everything merged with it, so an unknown op can only
make the spec more conservative, never wrong. Each freeze that costs a permutable axis is reported
in ``spec.unpermuted`` and as a warning. Rotary position embeddings (RoPE) slice, rotate and
concatenate the within-head dims in pairs; those slices and concatenations freeze the dims, and
the notes name them.

``nn.MultiheadAttention`` is a leaf to torch.fx. Its fused ``in_proj_weight`` stacks q, k and v
on one axis, which a spec entry cannot describe, so its rule permutes only the residual stream
through it (in_proj's input axis, out_proj's output axis) and leaves its heads unpermuted, with
a note. Write q, k and v as separate Linear layers to have heads permuted.
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

from .spec import PermutationSpec


class SpecInferenceError(RuntimeError):
    """The model could not be traced, so no spec can be derived."""


class SpecInferenceWarning(UserWarning):
    """Inference left some axes unpermuted because an op was not understood."""


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    # Softmax over any axis is permutation-equivariant along it, and acts elementwise along the others.
    nn.Softmax, nn.LogSoftmax,
)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_NORM_LAST_MODULES = (nn.LayerNorm, nn.RMSNorm)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, torch.neg, torch.abs, torch.exp,
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.leaky_relu, F.elu, F.hardtanh, F.softplus, F.dropout,
    F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, operator.neg,
}
_POOL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
}
# For methods only the tensor they are called on matters (x.to(y) and x.type_as(y) read y's dtype).
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "tanh", "sigmoid", "neg", "abs", "exp", "contiguous", "clone", "softmax", "log_softmax",
    "float", "double", "half", "bfloat16", "to", "type_as", "detach",
}
_BINARY_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    torch.add, torch.sub, torch.mul, torch.div,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "masked_fill", "masked_fill_",
                   "expand", "expand_as"}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten"}
_TRANSPOSE_FUNCTIONS = {torch.transpose, torch.permute, torch.swapaxes, torch.t}
_TRANSPOSE_METHODS = {"transpose", "permute", "swapaxes", "t"}
_MATMUL_FUNCTIONS = {operator.matmul, torch.matmul, torch.bmm}
_MATMUL_METHODS = {"matmul", "bmm"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_CAT_FUNCTIONS = {torch.cat, torch.concat}
_ROPE_HINT = "rotary position embeddings (RoPE) pair dims this way"


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


class _TensorShape:
    """The shape of a tensor flowing out of a node (aggregates hold one per tensor)."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = tuple(shape)


class _ShapeRecorder(torch.fx.Interpreter):
    """Runs the graph once and records every node's output shapes in ``node.meta["tensor_meta"]``,
    as fx's ShapeProp does, without its metadata (which imports sympy: half a second of every
    transfer's start-up)."""

    def run_node(self, n):
        out = super().run_node(n)
        found = []

        def meta(v):
            if isinstance(v, torch.Tensor):
                found.append(v)
                return _TensorShape(v.shape)
            if isinstance(v, (tuple, list)):
                return type(v)(meta(x) for x in v) if not hasattr(v, "_fields") else tuple(meta(x) for x in v)
            if isinstance(v, dict):
                return {k: meta(x) for k, x in v.items()}
            return v

        m = meta(out)
        if found:
            n.meta["tensor_meta"] = m
        return out


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _holds_tensors(node) -> bool:
    """A tuple or list of tensors flows out (torch.split, nn.MultiheadAttention, max with dim)."""
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return isinstance(meta, (tuple, list, dict))


def _arg(node, index: int, name: str, default=None):
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[index] if len(node.args) > index else default


def _segments(before, after):
    """Pair runs of axes with equal products: [([before axes], [after axes]), ...]; None if none fit."""
    segs, i, j = [], 0, 0
    while i < len(before) or j < len(after):
        if i < len(before) and before[i] == 1:
            segs.append(([i], []))
            i += 1
            continue
        if j < len(after) and after[j] == 1:
            segs.append(([], [j]))
            j += 1
            continue
        if i >= len(before) or j >= len(after):
            return None
        bi, aj, pb, pa = [i], [j], before[i], after[j]
        i, j = i + 1, j + 1
        while pb != pa:
            if pb < pa and i < len(before):
                bi.append(i)
                pb, i = pb * before[i], i + 1
            elif pa < pb and j < len(after):
                aj.append(j)
                pa, j = pa * after[j], j + 1
            else:
                return None
        segs.append((bi, aj))
    return segs


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.uf = _UnionFind()
        self.notes: list[str] = []
        self.used: set[str] = set()
        # (long axis, blocks axis, within axis, their sizes, note): the long axis is (blocks, within).
        self.splits: list[tuple[Any, Any, Any, tuple[int, int], str]] = []
        self.size: dict[Any, int] = {}

    # -- variables ---------------------------------------------------------------------------
    def ax(self, node, axis: int):
        """The variable of one axis of an activation, or None when no tensor flows out of ``node``."""
        shape = _shape(node)
        if shape is None or not shape:
            return None
        v = ("act", node.name, axis % len(shape))
        self.uf.add(v)
        self.size[v] = shape[axis]
        return v

    def axes(self, node) -> list:
        shape = _shape(node)
        return [] if shape is None else [self.ax(node, i) for i in range(len(shape))]

    def tensor_axis(self, name: str, axis: int):
        self.used.add(name)
        v = ("tensor", name, axis)
        self.uf.add(v)
        self.size[v] = self._state_shapes[name][axis]
        return v

    def union(self, *vs):
        for v in vs[1:]:
            self.uf.union(vs[0], v)

    def freeze(self, nodes, reason: str | None, tensors=()):
        """Freeze every axis of ``nodes`` (inputs first, output last) and of ``tensors``."""
        *inputs, out = nodes if nodes else [None]
        tensor_vars = [self.tensor_axis(name, a) for name in tensors for a in range(len(self._state_shapes[name]))]
        upstream = [v for n in inputs for v in self.axes(n)] + tensor_vars
        self.freeze_vars(upstream, self.axes(out) if out is not None else [], reason)

    def freeze_vars(self, upstream, downstream, reason: str | None):
        """Freeze variables; the reason is reported only when this freezes something that was still
        permutable upstream: freezing what follows the already-fixed input costs nothing."""
        # an axis of length 1 carries no permutation, so fixing it loses nothing
        loses = any(v is not None and self.size.get(v, 2) > 1 and not self.uf.is_frozen(v) for v in upstream)
        for v in list(upstream) + list(downstream):
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
            _ShapeRecorder(gm).run(*inputs)
        self.modules = dict(gm.named_modules())
        self.node_module = {}
        for node in gm.graph.nodes:
            self.visit(node)
        return self.build()

    def visit(self, node):
        tensor_inputs = [n for n in node.all_input_nodes if _shape(n) is not None]
        if node.op == "placeholder":
            self.freeze([node], None)  # features and positions are fixed by the data
        elif node.op == "output":
            self.freeze(tensor_inputs + [None], None)  # classes are fixed by the labels
        elif node.op == "get_attr":
            if node.target in self._state_shapes:
                # a parameter or buffer used directly (position embeddings): its axes are the node's
                for axis, v in enumerate(self.axes(node)):
                    self.union(v, self.tensor_axis(node.target, axis))
            else:
                self.freeze([node], None)  # a constant outside the state_dict cannot move
        elif node.op == "call_module":
            self.visit_module(node, self.modules[node.target], tensor_inputs)
        elif node.op in ("call_function", "call_method"):
            self.visit_function(node, tensor_inputs)

    def visit_module(self, node, mod: nn.Module, inputs):
        x = inputs[0] if inputs else None
        prefix = node.target + "."
        own = [k for k in self._state_shapes if k.startswith(prefix) and "." not in k[len(prefix):]]
        t = lambda attr, axis: self.tensor_axis(prefix + attr, axis)  # noqa: E731
        X, O = self.axes(x), self.axes(node)
        if isinstance(mod, nn.MultiheadAttention) and self.attention_module(node, mod, prefix):
            return
        if _shape(node) is None:
            self.freeze(inputs + [None], f"{node.target} ({type(mod).__name__}): module with several outputs not "
                                         "understood, its tensors and the channels around it are left unpermuted",
                        [k for k in self._state_shapes if k.startswith(prefix)])
            return
        if isinstance(mod, nn.Linear) and len(X) >= 1:
            self.union(X[-1], t("weight", 1))
            self.union(O[-1], t("weight", 0), t("bias", 0) if mod.bias is not None else None)
            for a, b in zip(X[:-1], O[:-1]):
                self.union(a, b)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and len(X) == mod.weight.dim():
            depthwise = mod.groups == mod.in_channels == mod.out_channels
            if mod.groups != 1 and not depthwise:
                return self.unknown_module(node, mod, inputs, own)
            self.union(X[0], O[0])
            if depthwise:  # each output channel reads only its own input channel
                self.union(X[1], O[1])
                self.freeze_vars([t("weight", 1)], [], None)
            else:
                self.union(X[1], t("weight", 1))
            self.union(O[1], t("weight", 0), t("bias", 0) if mod.bias is not None else None)
            self.spatial(node, X[2:], O[2:], "convolution mixes neighbouring positions")
            self.freeze_vars([], [t("weight", a) for a in range(2, mod.weight.dim())], None)
        elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
            self.union_all(X, O)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mod, attr, None) is not None:
                    self.union(O[1], t(attr, 0))
            if getattr(mod, "num_batches_tracked", None) is not None:
                self.used.add(prefix + "num_batches_tracked")
        elif isinstance(mod, _NORM_LAST_MODULES) and len(mod.normalized_shape) == 1:
            # normalising over the last axis commutes with permuting it
            self.union_all(X, O)
            for attr in ("weight", "bias"):
                if getattr(mod, attr, None) is not None:
                    self.union(O[-1], t(attr, 0))
        elif isinstance(mod, nn.GroupNorm) and mod.num_groups in (1, mod.num_channels):
            # one group normalises over all channels and one group per channel normalises each
            # alone: both are permutation-equivariant; other group counts are not.
            self.union_all(X, O)
            if mod.affine:
                self.union(O[1], t("weight", 0), t("bias", 0))
        elif isinstance(mod, nn.Embedding):
            for a, b in zip(X, O[:-1]):
                self.union(a, b)
            self.union(O[-1], t("weight", 1))
            self.freeze_vars([], [t("weight", 0)], None)  # token ids are fixed by the data
        elif isinstance(mod, _ELEMENTWISE_MODULES) and not own:
            self.union_all(X, O)
        elif isinstance(mod, _POOL_MODULES) and not own:
            self.pool(node, X, O)
        elif isinstance(mod, nn.Flatten):
            self.reshape(node, x)
        else:
            self.unknown_module(node, mod, inputs, own)

    def unknown_module(self, node, mod, inputs, own):
        self.freeze(
            inputs + [node],
            f"{node.target} ({type(mod).__name__}): module not understood, its tensors and "
            "the channels around it are left unpermuted",
            own,
        )

    def attention_module(self, node, mod: nn.MultiheadAttention, prefix: str) -> bool:
        """nn.MultiheadAttention's documented rule; False when its configuration is not covered."""
        q, k, v = (_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
        extra = [_arg(node, i, n) for i, n in ((3, "key_padding_mask"), (5, "attn_mask"))]
        if (mod.in_proj_weight is None or mod.bias_k is not None or not all(isinstance(n, torch.fx.Node)
                                                                            for n in (q, k, v))
                or any(isinstance(n, torch.fx.Node) for n in extra) or _shape(q) != _shape(k) != _shape(v)):
            return False
        t = lambda attr, axis: self.tensor_axis(prefix + attr, axis)  # noqa: E731
        Q, K, V = self.axes(q), self.axes(k), self.axes(v)
        self.union(Q[-1], K[-1], V[-1], t("in_proj_weight", 1))
        inner = [t("in_proj_weight", 0), t("out_proj.weight", 1)]
        if mod.in_proj_bias is not None:
            inner.append(t("in_proj_bias", 0))
        self.freeze_vars(inner, [], f"{node.target} (MultiheadAttention): its fused in_proj_weight stacks q, k and v "
                                    "on one axis, so its heads are left unpermuted (use separate q, k, v Linear "
                                    "layers to permute them); the residual stream through it is permuted")
        self.used.update(k for k in self._state_shapes if k.startswith(prefix))
        self.node_module[node.name] = (mod, prefix, Q)
        return True

    def attention_output(self, node, source, index) -> None:
        mod, prefix, Q = self.node_module[source.name]
        O = self.axes(node)
        if index == 0:
            for a, b in zip(Q[:-1], O[:-1]):
                self.union(a, b)
            bias = self.tensor_axis(prefix + "out_proj.bias", 0) if mod.out_proj.bias is not None else None
            self.union(O[-1], self.tensor_axis(prefix + "out_proj.weight", 0), bias)
        else:
            self.freeze([node], None)  # attention weights: positions only, fixed by the data

    def visit_function(self, node, inputs):
        f = node.target
        is_method = node.op == "call_method"
        if _shape(node) is None:
            if _holds_tensors(node):
                name = f if isinstance(f, str) else getattr(f, "__name__", repr(f))
                self.freeze(inputs + [None], f"{node.name} ({name}): op with several outputs not understood, "
                                             "the channels around it are left unpermuted")
            return  # sizes, shapes, dims: no tensor flows out, so nothing to relate
        if f is operator.getitem and isinstance(node.args[0], torch.fx.Node) and _shape(node.args[0]) is None:
            if node.args[0].name in self.node_module:
                self.attention_output(node, node.args[0], node.args[1])
            else:
                self.freeze([node], None)  # one output of an op whose inputs were frozen above
        elif (f in _ELEMENTWISE_FUNCTIONS) or (is_method and f in _ELEMENTWISE_METHODS):
            x = node.args[0]
            if _shape(x) == _shape(node):
                self.union_all(self.axes(x), self.axes(node))
            else:
                self.unknown(node, inputs)
        elif (f in _BINARY_FUNCTIONS) or (is_method and f in _BINARY_METHODS):
            self.broadcast(node, inputs)
        elif (f in _RESHAPE_FUNCTIONS) or (is_method and f in _RESHAPE_METHODS):
            self.reshape(node, node.args[0])
        elif (f in _TRANSPOSE_FUNCTIONS) or (is_method and f in _TRANSPOSE_METHODS):
            self.transpose(node, node.args[0])
        elif (f in _MATMUL_FUNCTIONS) or (is_method and f in _MATMUL_METHODS):
            self.matmul(node, node.args[0], node.args[1])
        elif f is F.scaled_dot_product_attention:
            self.attention(node)
        elif f is F.linear:
            self.linear(node, node.args[0], _arg(node, 1, "weight"), _arg(node, 2, "bias"))
        elif (f in _REDUCE_FUNCTIONS) or (is_method and f in _REDUCE_METHODS):
            self.reduce(node, node.args[0])
        elif f in _POOL_FUNCTIONS:
            self.pool(node, self.axes(node.args[0]), self.axes(node))
        elif f in _CAT_FUNCTIONS:
            self.cat(node, inputs)
        elif f is operator.getitem:
            self.getitem(node, node.args[0], node.args[1])
        else:
            self.unknown(node, inputs)

    def unknown(self, node, inputs):
        f = node.target
        name = f if isinstance(f, str) else getattr(f, "__name__", repr(f))
        self.freeze(inputs + [node], f"{node.name} ({name}): op not understood, the channels around it "
                                     "are left unpermuted")

    # -- op rules ----------------------------------------------------------------------------
    def union_all(self, xs, ys):
        for a, b in zip(xs, ys):
            self.union(a, b)

    def spatial(self, node, before, after, why: str):
        """Positions that an op mixes or resizes cannot be permuted on either side."""
        self.freeze_vars(before, after, f"{node.name}: {why}; the positions there are left unpermuted")

    def pool(self, node, X, O):
        self.union_all(X[:2], O[:2])
        self.spatial(node, X[2:], O[2:], "pooling mixes neighbouring positions")

    def broadcast(self, node, inputs):
        """Elementwise with broadcasting: an axis is shared with every input that is not size 1 there."""
        out = _shape(node)
        O = self.axes(node)
        for n in inputs:
            s = _shape(n)
            for i, (size, v) in enumerate(zip(s, self.axes(n))):
                j = len(out) - len(s) + i
                if size == out[j]:
                    self.union(v, O[j])
                # a size-1 input axis is constant along the output's: any permutation leaves it alone

    def linear(self, node, x, w, b):
        if not isinstance(w, torch.fx.Node) or len(_shape(w) or ()) != 2:
            return self.unknown(node, [n for n in (x, w, b) if isinstance(n, torch.fx.Node)])
        X, W, O = self.axes(x), self.axes(w), self.axes(node)
        self.union_all(X[:-1], O[:-1])
        self.union(X[-1], W[1])
        self.union(O[-1], W[0], self.ax(b, 0) if isinstance(b, torch.fx.Node) else None)

    def transpose(self, node, x):
        n = len(_shape(x))
        if node.target in ("t", torch.t):
            order = list(range(n))[::-1]
        elif node.target in ("permute", torch.permute):
            dims = node.args[1:] if node.op == "call_method" else (node.args[1],)
            if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                dims = dims[0]
            order = [d % n for d in dims]
        else:
            a, b = (d % n for d in node.args[1:3])
            order = list(range(n))
            order[a], order[b] = order[b], order[a]
        X, O = self.axes(x), self.axes(node)
        for out_axis, in_axis in enumerate(order):
            self.union(O[out_axis], X[in_axis])

    def matmul(self, node, a, b):
        """(..., n, k) @ (..., k, m): k is summed, so a shared permutation of it cancels."""
        sa, sb, so = _shape(a), _shape(b), _shape(node)
        if sa is None or sb is None or len(sa) < 2 or len(sb) < 2:
            return self.unknown(node, [n for n in (a, b) if isinstance(n, torch.fx.Node)])
        A, B, O = self.axes(a), self.axes(b), self.axes(node)
        self.union(A[-1], B[-2])
        self.union(A[-2], O[-2])
        self.union(B[-1], O[-1])
        for s, V in ((sa, A), (sb, B)):
            for i in range(len(s) - 2):
                j = len(so) - len(s) + i
                if s[i] == so[j]:
                    self.union(V[i], O[j])

    def attention(self, node):
        """softmax(q k^T / sqrt(d) + mask) v over (..., T, d): q and k share d, v and the output share d_v."""
        q, k, v = (_arg(node, i, n) for i, n in enumerate(("query", "key", "value")))
        mask = _arg(node, 3, "attn_mask")
        sq, sk, sv = _shape(q), _shape(k), _shape(v)
        if sq is None or sk is None or sv is None or not (sq[:-2] == sk[:-2] == sv[:-2]):
            # grouped-query attention shares k and v heads between q heads: not covered
            return self.unknown(node, [n for n in node.all_input_nodes])
        Q, K, V, O = self.axes(q), self.axes(k), self.axes(v), self.axes(node)
        for i in range(len(sq) - 2):
            self.union(Q[i], K[i], V[i], O[i])
        self.union(Q[-1], K[-1])
        self.union(V[-1], O[-1])
        self.union(Q[-2], O[-2])
        self.union(K[-2], V[-2])
        if isinstance(mask, torch.fx.Node):
            # the mask is added to the scores (..., Tq, Tk): it moves with every axis it varies along
            scores = [*Q[:-1], K[-2]]
            sm = _shape(mask)
            for i, (size, m) in enumerate(zip(sm, self.axes(mask))):
                j = len(scores) - len(sm) + i
                if size > 1:
                    self.union(m, scores[j])

    def reshape(self, node, x):
        """Match runs of axes with equal sizes; one axis split into two, or two merged, is segmented."""
        before, after = _shape(x), _shape(node)
        X, O = self.axes(x), self.axes(node)
        segs = _segments(before, after)
        if segs is None:
            return self.freeze([x, node], f"{node.name}: reshape {before} -> {after} is not understood, the "
                                          "channels are left unpermuted")
        for bi, aj in segs:
            bi = [i for i in bi if before[i] > 1]
            aj = [j for j in aj if after[j] > 1]
            if len(bi) == len(aj) == 1:
                self.union(X[bi[0]], O[aj[0]])
            elif not bi or not aj:
                continue  # only size-1 axes: nothing to permute
            elif len(bi) + len(aj) == 3:
                long, parts = (X[bi[0]], [O[j] for j in aj]) if len(bi) == 1 else (O[aj[0]], [X[i] for i in bi])
                sizes = tuple(after[j] for j in aj) if len(bi) == 1 else tuple(before[i] for i in bi)
                note = self._reshape_note(node, before, after)
                if any(self.uf.is_frozen(v) for v in (long, *parts)):
                    self.freeze_vars([X[i] for i in bi], [O[j] for j in aj], note)
                else:
                    self.splits.append((long, parts[0], parts[1], sizes, note))
            else:
                self.freeze_vars([X[i] for i in bi], [O[j] for j in aj], self._reshape_note(node, before, after))

    @staticmethod
    def _reshape_note(node, before, after) -> str:
        if len(after) == 2 and len(before) > 2:
            spatial = math.prod(before[2:])
            return (f"{node.name}: flatten of {before[1]} channels x {spatial} positions into {after}; the "
                    "channels are left unpermuted (pool to 1x1 before flattening to permute them)")
        return f"{node.name}: reshape {before} -> {after} is not understood, the channels are left unpermuted"

    def reduce(self, node, x):
        """A sum, mean or max over an axis ignores its order: reduced axes are free, the others carry over."""
        before = _shape(x)
        dim = _arg(node, 1, "dim")
        keepdim = _arg(node, 2, "keepdim", False)
        if dim is None:
            dims = set(range(len(before)))
        elif isinstance(dim, int):
            dims = {dim % len(before)}
        elif isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
            dims = {d % len(before) for d in dim}
        else:
            return self.unknown(node, [x])
        if not isinstance(keepdim, bool):
            return self.unknown(node, [x])
        X, O = self.axes(x), self.axes(node)
        kept = [i for i in range(len(before)) if keepdim or i not in dims]
        for j, i in enumerate(kept):
            if i not in dims:
                self.union(X[i], O[j])

    def cat(self, node, inputs):
        out = _shape(node)
        dim = _arg(node, 1, "dim", 0) % len(out)
        O = self.axes(node)
        for n in inputs:
            for i, v in enumerate(self.axes(n)):
                if i != dim:
                    self.union(v, O[i])
        # The joined axis holds several groups side by side, which one group cannot describe.
        reason = (f"{node.name}: concatenation along axis {dim}, the joined groups are left unpermuted"
                  + (f" ({_ROPE_HINT})" if dim == len(out) - 1 and len(out) > 2 else ""))
        self.freeze_vars([self.ax(n, dim) for n in inputs], [O[dim]], reason)

    def getitem(self, node, x, index):
        """Full slices keep an axis; a partial slice or a picked entry fixes it."""
        shape = _shape(x)
        X, O = self.axes(x), self.axes(node)
        items = index if isinstance(index, tuple) else (index,)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            fill = len(shape) - sum(1 for i in items if i is not None and i is not Ellipsis)
            items = items[:at] + (slice(None),) * fill + items[at + 1:]
        if not all(i is None or isinstance(i, (int, slice)) for i in items):
            return self.unknown(node, [x])
        p = o = 0
        for item in items:
            if item is None:
                o += 1
            elif isinstance(item, int):
                self.freeze_vars([X[p]], [], f"{node.name}: picks one entry along axis {p}, which is left unpermuted")
                p += 1
            else:
                dynamic = any(isinstance(b, torch.fx.Node) for b in (item.start, item.stop, item.step))
                if not dynamic and item.indices(shape[p]) == (0, shape[p], 1):
                    self.union(X[p], O[o])
                else:
                    self.freeze_vars([X[p]], [O[o]], f"{node.name}: slices part of axis {p}, which is left unpermuted"
                                                     + (f" ({_ROPE_HINT})" if p == len(shape) - 1 else ""))
                p, o = p + 1, o + 1
        for k in range(len(shape) - p):
            self.union(X[p + k], O[o + k])

    # -- result ------------------------------------------------------------------------------
    def settle_splits(self) -> dict[Any, tuple[Any, Any]]:
        """Root of each segmented class -> (blocks root, within root), None for a fixed part.

        A fixed long axis fixes both parts; two fixed parts fix the long axis; one fixed part
        leaves the other permutable (RoPE fixes the dims inside q and k heads, not the heads).
        Two splits of one class must agree; what does not fit is fixed.
        """
        find, frozen = self.uf.find, self.uf.is_frozen
        while True:
            changed = False
            seen: dict[Any, tuple[Any, Any, tuple[int, int]]] = {}
            for long, outer, inner, sizes, note in self.splits:
                trio = (long, outer, inner)
                if all(frozen(v) for v in trio):
                    continue
                r = find(long)
                bad = frozen(long) or (frozen(outer) and frozen(inner)) or len({r, find(outer), find(inner)}) < 3
                if not bad and r in seen:
                    o2, i2, s2 = seen[r]
                    bad = s2 != sizes
                    if not bad and (find(outer) != find(o2) or find(inner) != find(i2)):
                        self.union(outer, o2)
                        self.union(inner, i2)
                        changed = True
                        continue
                if bad:
                    members = sorted(v[1] for v in self.uf.parent if v[0] == "tensor" and find(v) == r)
                    lost = not frozen(long) and members
                    self.freeze_vars([], trio, None)
                    if lost:
                        self.notes.append(f"{', '.join(members[:4])}: {note.split(':', 1)[0]} splits them into "
                                          f"{sizes[0]} blocks of {sizes[1]}, but one of the two is fixed elsewhere "
                                          f"(a position-dependent rotation such as RoPE, or an op not understood); "
                                          "left unpermuted")
                    changed = True
                    continue
                seen.setdefault(r, (outer, inner, sizes))
            # a block or within-block axis that is itself split again is not covered
            parts = {find(v) for o, i, _ in seen.values() for v in (o, i) if not frozen(v)}
            for r in set(seen) & parts:
                self.freeze_vars([], [r], None)
                changed = True
            if not changed:
                out = {}
                for r, (o, i, sizes) in seen.items():
                    if frozen(r):
                        continue
                    out[r] = tuple(None if frozen(v) else find(v) for v in (o, i))
                    if None in out[r]:
                        members = sorted(v[1] for v in self.uf.parent if v[0] == "tensor" and find(v) == r)
                        if members:
                            kept = "blocks" if out[r][0] is not None else "units within each block"
                            self.notes.append(f"{', '.join(members[:4])}: split into {sizes[0]} blocks of {sizes[1]}; "
                                              f"only the {kept} are permuted, the rest is fixed elsewhere (a "
                                              "position-dependent rotation such as RoPE, or an op not understood)")
                return out

    def build(self) -> PermutationSpec:
        segmented = self.settle_splits()
        sizes = {}
        for long, outer, inner, (n_outer, n_inner), _ in self.splits:
            sizes.setdefault(self.uf.find(outer), n_outer)
            sizes.setdefault(self.uf.find(inner), n_inner)
        unused = [k for k in self._state_shapes if k not in self.used]
        for name in unused:
            if len(self._state_shapes[name]) > 0:
                self.notes.append(f"{name}: not used in forward(), left unpermuted")
        names: dict[Any, str] = {}
        taken: set[str] = set()

        def label(root, base):
            if root not in names:
                name, i = base, 1
                while name in taken:
                    i += 1
                    name = f"{base}#{i}"
                names[root] = name
                taken.add(name)
            return names[root]

        axes = {}
        group_sizes = {}
        for name, shape in self._state_shapes.items():
            entry = []
            for axis in range(len(shape)):
                v = ("tensor", name, axis)
                if name in unused or v not in self.uf.parent or self.uf.is_frozen(v) or shape[axis] == 1:
                    entry.append(None)
                    continue
                root = self.uf.find(v)
                base = name.rsplit(".", 1)[0] if axis == 0 else f"{name}:{axis}"
                if root in segmented:
                    outer, inner = segmented[root]
                    pair = (label(outer, f"{base}:blocks") if outer is not None else None,
                            label(inner, f"{base}:within") if inner is not None else None)
                    group_sizes.update({g: sizes[r] for g, r in zip(pair, (outer, inner)) if g is not None})
                    entry.append(pair)
                else:
                    entry.append(label(root, base))
            axes[name] = tuple(entry)
        notes = tuple(dict.fromkeys(self.notes))
        if notes:
            warnings.warn(
                "infer_spec left axes unpermuted:\n  " + "\n  ".join(notes), SpecInferenceWarning, stacklevel=3
            )
        return PermutationSpec(axes=axes, shapes=self._state_shapes, unpermuted=notes, group_sizes=group_sizes)


def infer_spec(model: nn.Module, example_input) -> PermutationSpec:
    """The permutation spec of ``model``, derived by tracing it on ``example_input``.

    Covers parameters and buffers, and attention heads (segmented axes, see
    :class:`~raytraj.perm.spec.PermutationSpec`). The input's axes and the output's class axis
    are never permuted; ops that are not understood leave the axes they touch unpermuted and are
    reported in ``spec.unpermuted``. Verify the result with :func:`check_spec`.

    Args:
        model: the module to trace with torch.fx.
        example_input: a batch (or a tuple of positional inputs) to propagate shapes with.

    Returns:
        the spec; it warns (SpecInferenceWarning) when it left axes unpermuted.
    """
    return _Tracer(model).run(example_input)
