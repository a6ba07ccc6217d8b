"""Derive a PermutationSpec from one real forward pass, recorded as ATen ops.

Capture. A TorchDispatchMode records every ATen op of one forward pass on the example input: the
op, its arguments and its outputs, with each tensor known by its identity (parameters and buffers
by the objects the model holds, so tied weights are one tensor under two names). This path was
chosen over the others:

* torch.fx traces Python symbolically: data-dependent control flow stops it, and it cannot see
  into ``nn.TransformerEncoder``, Hugging Face models or timm's attention;
* torch.export compiles the model symbolically (seconds per model, and sympy on every start-up),
  and fails on code that export does not support;
* the autograd graph, which Torch-Pruning's DepGraph walks after one real forward pass, sees only
  ops on tensors that need gradients (not token ids, masks or buffers), has no forward shapes,
  and must map its backward nodes back to modules through hooks.

Like DepGraph, a real pass runs the model's own Python, whatever its control flow; unlike it, the
ATen level sees every op with its shapes, and its op set is small and closed, so a rule is
written once per op (``addmm``, ``convolution``, ``native_layer_norm``, ...), not per module
class, and pointwise ops are known by ATen's own tag. The pass runs in eval mode with gradients
enabled: the fused fast paths of ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` are
then skipped, so their in-projection, heads and attention are seen op by op.

Rules. Every tensor axis is a variable: each axis of each parameter or buffer, and each axis of
each value the pass computes. Each op states which variables must share one permutation, and a
union-find merges them. The roots that survive become the groups.

A reshape that splits axes or merges them, (B, T, H*d) -> (B, T, H, d), or (B, N, 3*H*d) ->
(B, N, 3, H, d), records that the long axis is *segmented*: its variable is the row-major product
of the short ones. Two decompositions of one axis meet at their common refinement, so a fused
q/k/v axis 3*H*d, split once into (3, H*d) and then each H*d into (H, d), becomes (3, H, d). That
is how attention heads are found, in fused projections (``nn.MultiheadAttention``'s
``in_proj_weight``, timm's ``qkv``) as in separate ones. GroupNorm splits the channels into
(groups, channels per group) the same way: whole groups move, and the channels inside them.

Some variables are *frozen* (never permuted): every axis of the model input (features, positions,
token ids) and of its answer (classes), constants, and anything an op touches that this module
does not understand. A frozen variable freezes everything merged with it, so an unknown op can
only make the spec more conservative, never wrong. Each freeze that costs a permutable axis is
reported in ``spec.unpermuted`` and as a warning. Rotary position embeddings (RoPE) slice, rotate
and concatenate the within-head dims in pairs; those slices and concatenations freeze the dims,
and the notes name them. Whatever inference decides is proved by check_spec before use.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .example import call_args, map_tensors, primary_output
from .spec import PermutationSpec

_ROPE_HINT = "rotary position embeddings (RoPE) pair dims this way"


class SpecInferenceError(RuntimeError):
    """The model could not be run on the example, so no spec can be derived."""


class SpecInferenceWarning(UserWarning):
    """Inference left some axes unpermuted because an op was not understood."""


# -- capture ---------------------------------------------------------------------------------------
class _Ref:
    """A tensor in a recorded op's arguments: the id of the value it holds."""

    __slots__ = ("vid",)

    def __init__(self, vid: int):
        self.vid = vid


class _Recorder(TorchDispatchMode):
    """Records each ATen op as (op, arguments with tensors as _Refs, output value ids)."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[Any, dict, list]] = []
        self.shapes: list[tuple[int, ...]] = []  # value id -> shape
        self.produced: set[int] = set()
        self._vid: dict[int, int] = {}  # id(tensor) -> value id
        self._keep: list[torch.Tensor] = []  # holds every tensor seen, so no id() is reused

    def value(self, t: torch.Tensor, fresh: bool = False) -> int:
        vid = None if fresh else self._vid.get(id(t))
        if vid is None:
            vid = len(self.shapes)
            self.shapes.append(tuple(t.shape))
            self._vid[id(t)] = vid
            self._keep.append(t)
        return vid

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        restride = _is_restride(func, args, kwargs)
        out = func(*args, **kwargs)
        if restride:  # a change of memory layout only: the values, and their axes, stay as they are
            func, args, kwargs = torch.ops.aten.alias.default, args[:1], {}
        bound = _bind(func, map_tensors(args, lambda t: _Ref(self.value(t))),
                      map_tensors(kwargs, lambda t: _Ref(self.value(t))))
        base = None
        if (not restride and args and out is args[0] and isinstance(out, torch.Tensor)
                and out._base is not None):
            # An in-place write into a view changes its base too, which no later op would show.
            base = self.value(out._base)
        outs = []
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                outs.append(self.value(t, fresh=True))  # in-place ops return their input: a new value
                self.produced.add(outs[-1])
            else:
                outs.append(None)
        if base is not None:
            bound["__base__"] = _Ref(base)
        self.ops.append((func, bound, outs))
        return out


def _is_restride(func, args, kwargs) -> bool:
    """``as_strided(x, x.shape, strides)`` that differs from x's strides only on axes of length 1.

    ATen's own kernels restride this way (adaptive_avg_pool2d to 1x1 on a channels-last input): the
    same values at the same places, so it is an identity, not an arbitrary view.
    """
    if func.overloadpacket.__name__ not in ("as_strided", "as_strided_") or not args:
        return False
    t = args[0]
    size = args[1] if len(args) > 1 else kwargs.get("size")
    stride = args[2] if len(args) > 2 else kwargs.get("stride")
    offset = args[3] if len(args) > 3 else kwargs.get("storage_offset")
    if not isinstance(t, torch.Tensor) or size is None or stride is None:
        return False
    return (tuple(size) == tuple(t.shape) and (offset is None or offset == t.storage_offset())
            and all(int(a) == b for a, b, n in zip(stride, t.stride(), size) if n > 1))


_SCHEMAS: dict[Any, list[tuple[str, bool, Any]]] = {}


def _bind(func, args, kwargs) -> dict:
    """The op's arguments by schema name, defaults filled in."""
    schema = _SCHEMAS.get(func)
    if schema is None:  # reading a schema is slow, and a forward pass repeats few ops many times
        schema = _SCHEMAS[func] = [(a.name, a.has_default_value(), a.default_value if a.has_default_value()
                                    else None) for a in func._schema.arguments]
    bound = {}
    for i, (name, has_default, default) in enumerate(schema):
        if i < len(args):
            bound[name] = args[i]
        elif name in kwargs:
            bound[name] = kwargs[name]
        elif has_default:
            bound[name] = default
    return bound


def _refs(value) -> list[int]:
    """Value ids of the tensors inside an argument (a tensor, or a list of them)."""
    if isinstance(value, _Ref):
        return [value.vid]
    if isinstance(value, (tuple, list)):
        return [v.vid for v in value if isinstance(v, _Ref)]
    return []


# -- union-find ------------------------------------------------------------------------------------
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


def _refinement(a: list[int], b: list[int]) -> list[int] | None:
    """The coarsest sizes that both row-major factorisations ``a`` and ``b`` of one length are made of.

    [3, 8] and [3, 2, 4] give [3, 2, 4]; [2, 8] and [4, 4] give [2, 2, 4]; [2, 3] and [3, 2] have
    none (their block boundaries do not nest), which is None.
    """
    cuts = sorted({math.prod(a[:i + 1]) for i in range(len(a))} | {math.prod(b[:i + 1]) for i in range(len(b))})
    if any(hi % lo for lo, hi in zip(cuts, cuts[1:])):
        return None
    return [cuts[0]] + [hi // lo for lo, hi in zip(cuts, cuts[1:])]


def _runs(sizes: list[int], atoms: list[int]) -> list[list[int]]:
    """Which atoms (indices) make up each of ``sizes``, in order."""
    out, k = [], 0
    for n in sizes:
        run, p = [], 1
        while p < n:
            run.append(k)
            p, k = p * atoms[k], k + 1
        out.append(run)
    return out


# -- the walk --------------------------------------------------------------------------------------
_IDENTITY = {"_to_copy", "to", "clone", "contiguous", "detach", "alias", "lift_fresh", "lift_fresh_copy",
             "_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax", "dropout", "native_dropout",
             "zeros_like", "ones_like", "empty_like", "full_like", "fill_", "zero_", "_conj", "resolve_conj",
             "resolve_neg", "type_as", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}
# Elementwise ops that ATen does not tag as pointwise (PReLU is not one: its weight sits on axis 1, not last).
# PReLU reaches ATen as _prelu_kernel(x, weight viewed as (1, C, 1, ...)), an elementwise op with broadcasting.
_POINTWISE_UNTAGGED = {"copy_", "copy", "masked_fill", "where", "lerp", "hardswish", "hardswish_", "gelu_", "silu_",
                       "log_sigmoid_forward", "masked_fill_", "_prelu_kernel"}
# Ops that make a new tensor of constants, reading their input only for its dtype and device.
_FACTORIES = {"new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided", "new_tensor"}
_VIEWS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten", "squeeze", "unsqueeze",
          "view_as", "squeeze_", "unsqueeze_", "view_copy", "_reshape_copy"}
_TRANSPOSES = {"t", "transpose", "permute", "swapaxes", "swapdims", "movedim", "numpy_T", "mT", "transpose_", "t_"}
_MATMULS = {"mm", "bmm", "matmul", "addmm", "baddbmm", "addbmm"}
_BATCH_NORMS = {"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
                "cudnn_batch_norm", "miopen_batch_norm", "batch_norm", "_batch_norm_impl_index"}
_LAST_NORMS = {"native_layer_norm", "layer_norm", "_fused_rms_norm", "rms_norm"}
_SPATIAL = {"max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
            "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool1d",
            "adaptive_max_pool2d", "adaptive_max_pool3d", "upsample_nearest1d", "upsample_nearest2d",
            "upsample_nearest3d", "upsample_bilinear2d", "upsample_linear1d", "upsample_bicubic2d",
            "upsample_trilinear3d", "_upsample_nearest_exact2d", "_upsample_bilinear2d_aa",
            "pixel_shuffle", "pixel_unshuffle"}
# Ops that reorder, pick or mix entries only along the axes they name: those are fixed, the rest carry over.
_ALONG = {"roll": "dims", "flip": "dims", "cumsum": "dim", "cumprod": "dim", "logcumsumexp": "dim", "cummax": "dim",
          "cummin": "dim", "index_select": "dim", "sort": "dim", "topk": "dim", "tril": -2, "triu": -2,
          "diff": "dim"}
_REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
               "logsumexp", "linalg_vector_norm", "norm", "any", "all", "argmax", "argmin", "nansum", "aminmax"}


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.uf = _UnionFind()
        self.notes: list[str] = []
        self.used: set[str] = set()
        # (long axis, [parts], their sizes, note): the long axis is the row-major product of the parts.
        self.splits: list[tuple[Any, list, tuple[int, ...], str]] = []
        self.size: dict[Any, int] = {}
        self._fresh = 0
        self.noted: list = []  # variables fixed for a reason worth a note (an op not understood, RoPE)
        self.consts: set[int] = set()

    # -- variables ---------------------------------------------------------------------------
    def ax(self, vid: int | None, axis: int):
        """The variable of one axis of a value."""
        if vid is None:
            return None
        shape = self.shapes[vid]
        if not shape:
            return None
        v = ("v", vid, axis % len(shape))
        self.uf.add(v)
        self.size[v] = shape[axis]
        return v

    def axes(self, vid: int | None) -> list:
        return [] if vid is None else [self.ax(vid, i) for i in range(len(self.shapes[vid]))]

    def fresh(self, size: int):
        self._fresh += 1
        v = ("part", self._fresh)
        self.uf.add(v)
        self.size[v] = size
        return v

    def tensor_axis(self, name: str, axis: int):
        v = ("tensor", name, axis)
        self.uf.add(v)
        self.size[v] = self._state_shapes[name][axis]
        return v

    def union(self, *vs):
        for v in vs[1:]:
            self.uf.union(vs[0], v)

    def union_all(self, xs, ys):
        for a, b in zip(xs, ys):
            self.union(a, b)

    def split(self, long, sizes, note: str) -> list:
        """Record ``long`` as the row-major product of new variables of ``sizes``; returns them."""
        parts = [self.fresh(n) for n in sizes]
        self.add_split(long, parts, sizes, note)
        return parts

    def add_split(self, long, parts, sizes, note: str):
        # Fixed is settled at once where it is already known (the input's axes), so that notes only
        # report axes that could have moved; settle_splits does the rest at the end.
        if self.uf.is_frozen(long):
            self.freeze_vars([], parts, None)
        self.splits.append((long, list(parts), tuple(sizes), note))

    def freeze_vars(self, upstream, downstream, reason: str | None):
        """Freeze variables; the reason is reported only when this freezes something that was still
        permutable upstream: freezing what follows an already-fixed input costs nothing."""
        # an axis of length 1 carries no permutation, so fixing it loses nothing
        loses = any(v is not None and self.size.get(v, 2) > 1 and not self.uf.is_frozen(v) for v in upstream)
        for v in list(upstream) + list(downstream):
            self.uf.freeze(v)
        if reason:
            self.noted += [v for v in list(upstream) + list(downstream) if v is not None]
        if reason and loses:
            self.notes.append(reason)

    def freeze_values(self, inputs, outputs, reason: str | None):
        self.freeze_vars([v for i in inputs for v in self.axes(i)], [v for o in outputs for v in self.axes(o)],
                         reason)

    # -- the walk ----------------------------------------------------------------------------
    def run(self, example_input) -> PermutationSpec:
        model = copy.deepcopy(self.model).eval()
        for p in model.parameters():
            if p.is_floating_point():
                # Needing gradients turns the fused fast paths of nn.TransformerEncoderLayer and
                # nn.MultiheadAttention off, so their ops are recorded one by one.
                p.requires_grad_(True)
        state = model.state_dict(keep_vars=True)
        self._state_shapes = {k: tuple(v.shape) for k, v in state.items()}
        rec = _Recorder()
        state_vids: dict[str, int] = {k: rec.value(v) for k, v in state.items()}
        args, kwargs = call_args(example_input)
        input_vids: list[int] = []
        map_tensors((args, kwargs), lambda t: input_vids.append(rec.value(t)))
        try:
            with torch.enable_grad(), rec:
                out = model(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the model's own code failed on the example
            raise SpecInferenceError(
                f"{type(self.model).__name__} failed on the example input ({type(e).__name__}: {e}); give an "
                "example batch the model accepts (a tensor, a tuple of positional inputs or a dict of keyword "
                "inputs), or write the spec by hand with PermutationSpec.from_axes"
            ) from e
        answer = primary_output(out)
        if answer is None:
            raise SpecInferenceError(
                f"{type(self.model).__name__} returned {type(out).__name__}, which holds no tensor; inference "
                "needs the model's answer as a tensor, a tuple, a dict or a ModelOutput with 'logits'")
        self.shapes = rec.shapes
        for name, vid in state_vids.items():
            for axis, v in enumerate(self.axes(vid)):
                self.union(v, self.tensor_axis(name, axis))
        self.freeze_values(input_vids, [], None)  # features, positions, token ids are fixed by the data
        # Values nobody produced and that are neither state nor input are constants: they cannot move.
        known = set(state_vids.values()) | set(input_vids) | rec.produced
        consts = {vid for _, bound, _ in rec.ops for a in bound.values() for vid in _refs(a)} - known
        self.consts = consts
        self.freeze_values(consts, [], None)
        self.state_names: dict[int, list[str]] = {}
        for name, vid in state_vids.items():
            self.state_names.setdefault(vid, []).append(name)
        for func, bound, outs in rec.ops:
            self.mark_used(bound)
            self.visit(func, bound, outs)
        self.freeze_values([rec.value(answer)], [], None)  # classes are fixed by the labels
        return self.build()

    def mark_used(self, bound):
        for a in bound.values():
            for vid in _refs(a):
                self.used.update(self.state_names.get(vid, ()))

    def visit(self, func, a: dict, outs: list):
        name = func.overloadpacket.__name__
        ins = [vid for v in a.values() for vid in _refs(v)]
        tensor_outs = [o for o in outs if o is not None]
        if not tensor_outs:
            return  # an op that only reads (an assert, a scalar): no tensor flows on
        out = outs[0]
        pointwise = torch.Tag.pointwise in func.tags or name in _POINTWISE_UNTAGGED
        if "__base__" in a and (pointwise or name in ("zero_", "fill_")) and len(set(ins)) == 2:
            # relu_ or zero_ on a view (Swin v2's position MLP, its qkv bias): an elementwise function of the
            # view's own entries changes the base entry by entry and brings in no other tensor.
            del a["__base__"]
            ins = [v for v in ins if v in _refs(a.get("self", a.get("input")))]
        if "__base__" in a:
            return self.freeze_values(ins, tensor_outs, f"{self.where(ins)}{name}: an in-place write into a view; "
                                                         "the channels around it are left unpermuted")
        if not ins or name in _FACTORIES or all(v in self.consts for v in ins):
            self.consts.update(tensor_outs)  # made from constants alone: a constant (RoPE's cos from a table)
            return self.freeze_values([], tensor_outs, None)
        first = _refs(a.get("self", a.get("input")))
        x = first[0] if first else None
        if name in _IDENTITY and x is not None and all(self.shapes[o] == self.shapes[x] for o in tensor_outs):
            for o in tensor_outs:
                self.union_all(self.axes(x), self.axes(o))
        elif pointwise:
            self.broadcast(out, ins)
        elif name in _VIEWS:
            self.reshape(x, out, name)
        elif name == "expand":
            self.broadcast(out, [x])
        elif name in _TRANSPOSES:
            self.transpose(name, a, x, out)
        elif name in _MATMULS:
            self.matmul(name, a, out)
        elif name == "convolution" or name == "_convolution":
            self.convolution(a, out)
        elif name in _BATCH_NORMS or name in _LAST_NORMS or name == "native_group_norm":
            rule = self.batch_norm if name in _BATCH_NORMS else self.norm_last if name in _LAST_NORMS else \
                self.group_norm
            rule(a, x, out)
            self.freeze_values([], tensor_outs[1:], None)  # statistics saved for the backward pass
        elif name == "embedding":
            self.embedding(a, out)
        elif name.startswith("_scaled_dot_product") or name == "scaled_dot_product_attention":
            self.attention(name, a, outs)
        elif name in _SPATIAL:
            self.spatial(name, x, tensor_outs)
        elif name in _REDUCTIONS or torch.Tag.reduction in func.tags:
            self.reduce(name, a, x, tensor_outs)
        elif name in ("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
                      "tensor_split", "split_with_sizes_copy", "unbind", "unbind_copy"):
            self.split_op(name, a, x, outs)
        elif name in ("cat", "concat", "stack"):
            self.cat(name, a, out)
        elif name == "glu" and x is not None:
            self.glu(a, x, out)
        elif name == "repeat" and x is not None:
            self.repeat(a, x, out)
        elif name in ("select", "select_copy"):
            self.select(a, x, out)
        elif name in ("slice", "slice_copy", "narrow"):
            self.slice(name, a, x, out)
        elif name in _ALONG:
            self.along(name, a, x, tensor_outs)
        elif name == "index" and x is not None:
            self.index(a, x, out)
        elif name in ("constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
                      "replication_pad1d", "replication_pad2d", "replication_pad3d", "pad"):
            self.pad(a, x, out)
        else:
            self.unknown(name, ins, tensor_outs)

    def unknown(self, name, ins, outs):
        self.freeze_values(ins, outs, f"{self.where(ins)}{name}: op not understood, the channels around it are "
                                      "left unpermuted")

    def where(self, ins) -> str:
        """The first parameter an op reads, to say where a note comes from."""
        names = [n for v in ins for n in self.state_names.get(v, ())]
        return f"{names[0]}: " if names else ""

    # -- op rules ----------------------------------------------------------------------------
    def broadcast(self, out, ins):
        """Elementwise with broadcasting: an axis is shared with every input that is not size 1 there."""
        so = self.shapes[out]
        O = self.axes(out)
        # constants last, so that an axis they meet is known to be fixed already (positions) or not
        for vid in sorted(ins, key=lambda v: v in self.consts):
            s = self.shapes[vid]
            if len(s) > len(so):
                continue
            for i, (size, v) in enumerate(zip(s, self.axes(vid))):
                j = len(so) - len(s) + i
                if size == so[j]:
                    if size > 1 and vid in self.consts and not self.uf.is_frozen(O[j]):
                        # A table kept outside the state (a non-persistent buffer, RoPE's cos and sin)
                        # cannot move with the axis it varies along, so that axis stays.
                        self.notes.append(f"{self.where(ins)}an elementwise op with a constant that varies along "
                                          f"axis {j - len(so)} leaves it unpermuted ({_ROPE_HINT})")
                        self.noted.append(O[j])
                    self.union(v, O[j])
                # a size-1 input axis is constant along the output's: any permutation leaves it alone

    def reshape(self, x, out, name):
        """Match runs of axes with equal sizes; axes split or merged are segmented at their common refinement."""
        before, after = self.shapes[x], self.shapes[out]
        X, O = self.axes(x), self.axes(out)
        segs = _segments(before, after)
        note = self._reshape_note(name, before, after)
        lost = f"{note}: a reshape that is not understood, the channels are left unpermuted"
        if segs is None:
            return self.freeze_vars(X, O, lost)
        for bi, aj in segs:
            bi = [i for i in bi if before[i] > 1]
            aj = [j for j in aj if after[j] > 1]
            if len(bi) == len(aj) == 1:
                self.union(X[bi[0]], O[aj[0]])
            elif not bi or not aj:
                continue  # only size-1 axes: nothing to permute
            else:
                sb, sa = [before[i] for i in bi], [after[j] for j in aj]
                atoms = _refinement(sb, sa)
                if atoms is None:
                    self.freeze_vars([X[i] for i in bi], [O[j] for j in aj], lost)
                    continue
                parts = [self.fresh(n) for n in atoms]
                sides = [(v, run) for vars_, sizes in (([X[i] for i in bi], sb), ([O[j] for j in aj], sa))
                         for v, run in zip(vars_, _runs(sizes, atoms))]
                for v, run in sides:  # the input side first, so what is fixed there reaches the parts
                    if len(run) == 1:
                        self.union(v, parts[run[0]])
                    else:
                        self.add_split(v, [parts[k] for k in run], tuple(atoms[k] for k in run), note)
                for v, run in sides:
                    if all(self.uf.is_frozen(parts[k]) for k in run):
                        self.freeze_vars([], [v], None)

    @staticmethod
    def _reshape_note(name, before, after) -> str:
        return f"{name} {list(before)} -> {list(after)}"

    def transpose(self, name, a, x, out):
        n = len(self.shapes[x])
        if name in ("t", "t_", "numpy_T") or (name == "mT"):
            order = list(range(n))[::-1] if name != "mT" else [*range(n - 2), n - 1, n - 2]
        elif name == "permute":
            order = [d % n for d in a["dims"]]
        elif name == "movedim":
            return self.unknown(name, [x], [out])
        else:
            d0, d1 = (a.get("dim0"), a.get("dim1")) if "dim0" in a else (a.get("axis0"), a.get("axis1"))
            order = list(range(n))
            order[d0 % n], order[d1 % n] = order[d1 % n], order[d0 % n]
        X, O = self.axes(x), self.axes(out)
        for out_axis, in_axis in enumerate(order):
            self.union(O[out_axis], X[in_axis])

    def matmul(self, name, a, out):
        """(..., n, k) @ (..., k, m): k is summed, so a shared permutation of it cancels."""
        m1 = _refs(a.get("mat1", a.get("batch1", a.get("self"))))
        m2 = _refs(a.get("mat2", a.get("batch2", a.get("other"))))
        if name in ("mm", "bmm", "matmul"):
            m1, m2 = _refs(a["self"]), _refs(a.get("mat2", a.get("other")))
        if not m1 or not m2:
            return self.unknown(name, [v for x in a.values() for v in _refs(x)], [out])
        p, q = m1[0], m2[0]
        sp, sq, so = self.shapes[p], self.shapes[q], self.shapes[out]
        if len(sp) < 2 or len(sq) < 2 or len(so) < 2:
            return self.unknown(name, [p, q], [out])
        A, B, O = self.axes(p), self.axes(q), self.axes(out)
        self.union(A[-1], B[-2])
        self.union(A[-2], O[-2])
        self.union(B[-1], O[-1])
        for s, V in ((sp, A), (sq, B)):
            for i in range(len(s) - 2):
                j = len(so) - len(s) + i
                if j >= 0 and s[i] == so[j]:
                    self.union(V[i], O[j])
        if name.startswith("add") or name == "baddbmm":
            self.broadcast(out, _refs(a.get("self")))  # the added bias

    def convolution(self, a, out):
        x, w = _refs(a["input"])[0], _refs(a["weight"])[0]
        bias = _refs(a.get("bias"))
        X, W, O = self.axes(x), self.axes(w), self.axes(out)
        groups, transposed = int(a.get("groups", 1)), bool(a.get("transposed", False))
        if len(X) != len(W) or len(O) != len(X):
            return self.unknown("convolution", [x, w, *bias], [out])
        w_out, w_in = (W[1], W[0]) if transposed else (W[0], W[1])
        self.union(X[0], O[0])
        if bias:
            self.union(O[1], self.ax(bias[0], 0))
        if groups == 1:
            self.union(X[1], w_in)
            self.union(O[1], w_out)
        else:
            # Grouped (depthwise when each group has one channel): channels come in `groups` blocks, and
            # block g of the output reads only block g of the input: blocks move together on both sides.
            # The weight holds one side whole (outputs, or inputs when transposed) and the other per group.
            cin, cout = self.shapes[x][1], self.shapes[out][1]
            gin = self.segment(X[1], groups, cin // groups, "grouped convolution")
            gout = self.segment(O[1], groups, cout // groups, "grouped convolution")
            self.union(gin[0], gout[0])
            whole, per_group, inner = (w_in, w_out, gout[1]) if transposed else (w_out, w_in, gin[1])
            self.union(X[1] if transposed else O[1], whole)
            if self.size[per_group] > 1:
                self.union(inner, per_group)
            else:
                self.freeze_vars([], [per_group], None)
        self.freeze_vars(X[2:], O[2:] + W[2:], f"convolution mixes neighbouring positions; the positions there "
                                                 "are left unpermuted")

    def segment(self, long, blocks: int, inner: int, note: str) -> list:
        """``long`` as (blocks, inner), with a size-1 part standing for nothing: [blocks var, inner var]."""
        if blocks == 1:
            return [self.fresh(1), long]
        if inner == 1:
            return [long, self.fresh(1)]
        return self.split(long, (blocks, inner), note)

    def batch_norm(self, a, x, out):
        X, O = self.axes(x), self.axes(out)
        self.union_all(X, O)
        for key in ("weight", "bias", "running_mean", "running_var"):
            for vid in _refs(a.get(key)):
                self.union(O[1], self.ax(vid, 0))

    def norm_last(self, a, x, out):
        """Normalising over the trailing axes commutes with permuting any of them; weight and bias sit on them."""
        X, O = self.axes(x), self.axes(out)
        self.union_all(X, O)
        for key in ("weight", "bias"):
            for vid in _refs(a.get(key)):
                W = self.axes(vid)
                self.union_all(W, X[len(X) - len(W):])

    def group_norm(self, a, x, out):
        """GroupNorm normalises each block of C/G channels: whole blocks move, and the channels inside them."""
        X, O = self.axes(x), self.axes(out)
        self.union_all(X, O)
        c, g = self.shapes[x][1], int(a["group"])
        self.segment(X[1], g, c // g, "GroupNorm")
        for key in ("weight", "bias"):
            for vid in _refs(a.get(key)):
                self.union(X[1], self.ax(vid, 0))

    def embedding(self, a, out):
        w, idx = _refs(a["weight"])[0], _refs(a["indices"])[0]
        W, I, O = self.axes(w), self.axes(idx), self.axes(out)
        self.union_all(I, O[:-1])
        self.union(O[-1], W[1])
        self.freeze_vars([], [W[0]], None)  # token ids are fixed by the data

    def attention(self, name, a, outs):
        """softmax(q k^T / sqrt(d) + mask) v over (..., T, d): q and k share d, v and the output share d_v."""
        q, k, v = (_refs(a.get(n)) for n in ("query", "key", "value"))
        mask = _refs(a.get("attn_mask", a.get("attn_bias")))
        out = outs[0]
        if not (q and k and v) or out is None:
            return self.unknown(name, [i for x in a.values() for i in _refs(x)], [o for o in outs if o is not None])
        q, k, v = q[0], k[0], v[0]
        sq, sk, sv = self.shapes[q], self.shapes[k], self.shapes[v]
        Q, K, V, O = self.axes(q), self.axes(k), self.axes(v), self.axes(out)
        if sq[:-2] == sk[:-2] == sv[:-2]:
            for i in range(len(sq) - 2):
                self.union(Q[i], K[i], V[i], O[i])
        elif (len(sq) >= 3 and sq[:-3] == sk[:-3] == sv[:-3] and sk[-3] == sv[-3] and sk[-3]
              and sq[-3] % sk[-3] == 0):
            # Grouped-query attention (enable_gqa): kv head j serves q heads j * g ... j * g + g - 1, so the
            # q heads are (kv heads, g): kv heads move with their q groups, q heads also within a group.
            for i in range(len(sq) - 3):
                self.union(Q[i], K[i], V[i], O[i])
            self.union(Q[-3], O[-3])
            kv, _ = self.segment(Q[-3], sk[-3], sq[-3] // sk[-3], "grouped-query attention")
            self.union(kv, K[-3], V[-3])
        else:
            return self.unknown(name, [q, k, v, *mask], [o for o in outs if o is not None])
        self.union(Q[-1], K[-1])
        self.union(V[-1], O[-1])
        self.union(Q[-2], O[-2])
        self.union(K[-2], V[-2])
        if mask:
            # the mask is added to the scores (..., Tq, Tk): it moves with every axis it varies along
            scores = [*Q[:-1], K[-2]]
            sm = self.shapes[mask[0]]
            for i, (size, m) in enumerate(zip(sm, self.axes(mask[0]))):
                j = len(scores) - len(sm) + i
                if size > 1 and j >= 0:
                    self.union(m, scores[j])
        # the other outputs (log-sum-exp, seeds) only serve the backward pass
        self.freeze_values([], [o for o in outs[1:] if o is not None], None)

    def spatial(self, name, x, outs):
        """Pooling and resizing act per channel and mix positions: (N, C) carry over, positions are fixed."""
        X = self.axes(x)
        for o in outs:
            O = self.axes(o)
            if len(O) != len(X) or len(X) < 3:
                return self.unknown(name, [x], outs)
            self.union_all(X[:2], O[:2])
            self.freeze_vars(X[2:], O[2:], None)

    def reduce(self, name, a, x, outs):
        """A sum, mean or max over an axis ignores its order: reduced axes are free, the others carry over."""
        before = self.shapes[x]
        dim = a.get("dim")
        keepdim = bool(a.get("keepdim", False))
        if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
            dims = set(range(len(before)))
        elif isinstance(dim, int):
            dims = {dim % max(1, len(before))}
        elif isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
            dims = {d % len(before) for d in dim}
        else:
            return self.unknown(name, [x], outs)
        X = self.axes(x)
        kept = [i for i in range(len(before)) if keepdim or i not in dims]
        for o in outs:
            O = self.axes(o)
            if len(O) != len(kept):
                self.freeze_vars([], O, None)  # an output of another shape: nothing says how it relates
                continue
            for j, i in enumerate(kept):
                if i not in dims:
                    self.union(X[i], O[j])

    def along(self, name, a, x, outs):
        n = len(self.shapes[x])
        key = _ALONG[name]
        dims = a.get(key) if isinstance(key, str) else [key, key + 1]
        dims = [dims] if isinstance(dims, int) else list(dims or ())
        if not dims or n == 0:
            return self.unknown(name, [x], outs)
        dims = {d % n for d in dims}
        X = self.axes(x)
        for o in outs:
            O = self.axes(o)
            if len(O) != n:
                return self.unknown(name, [x], outs)
            self.union_all([v for i, v in enumerate(X) if i not in dims], [v for i, v in enumerate(O) if i not in dims])
            self.freeze_vars([X[d] for d in dims], [O[d] for d in dims],
                             f"{name} along axis {sorted(dims)}, which is left unpermuted")

    def index(self, a, x, out):
        """x[..., idx, ...] with one index tensor: the indexed axis is fixed, the others carry over."""
        indices = a.get("indices") or []
        at = [i for i, t in enumerate(indices) if t is not None]
        if len(at) != 1 or not isinstance(indices[at[0]], _Ref):
            return self.unknown("index", [x, *[r for t in indices for r in _refs(t)]], [out])
        p, idx = at[0], indices[at[0]].vid
        X, O, k = self.axes(x), self.axes(out), len(self.shapes[idx])
        if len(O) != len(X) - 1 + k:
            return self.unknown("index", [x, idx], [out])
        self.union_all(X[:p], O[:p])
        self.union_all(X[p + 1:], O[p + k:])
        self.union_all(self.axes(idx), O[p:p + k])
        self.freeze_vars([X[p]], O[p:p + k], f"indexing picks entries along axis {p}, which is left unpermuted")

    def split_op(self, name, a, x, outs):
        """Equal pieces along one axis: that axis is (pieces, piece length); the pieces are fixed blocks and the
        units inside them move alike in every piece. Unequal pieces are blocks of their common length."""
        shape = self.shapes[x]
        dim = int(a.get("dim", 0)) % len(shape)
        X = self.axes(x)
        pieces = [o for o in outs if o is not None]
        unbind = name.startswith("unbind")
        for o in pieces:
            O = self.axes(o)
            if unbind:
                self.union_all(X[:dim] + X[dim + 1:], O)
            else:
                self.union_all(X[:dim] + X[dim + 1:], O[:dim] + O[dim + 1:])
        if unbind:  # each piece is used its own way (q, k, v): which is which is fixed by the code
            return self.freeze_vars([X[dim]], [], None)
        lengths = [self.shapes[o][dim] for o in pieces]
        unit = math.gcd(*lengths)
        if sum(lengths) != shape[dim] or unit == 0:
            return self.freeze_vars([X[dim]], [self.ax(o, dim) for o in pieces],
                                    f"{name}: pieces that do not tile axis {dim}, which is left unpermuted")
        # Pieces of unequal length (q, then k and v together, in cross-attention) are whole blocks of
        # their common length: a piece of m blocks is (m, unit) with its m fixed like the pieces'.
        blocks, inner = self.segment(X[dim], shape[dim] // unit, unit, name)
        self.freeze_vars([], [blocks], None)  # which piece is which (q, k or v) is fixed by the code
        for o, n in zip(pieces, lengths):
            own = self.segment(self.ax(o, dim), n // unit, unit, name)
            self.freeze_vars([], [own[0]], None)
            self.union(inner, own[1])

    def cat(self, name, a, out):
        """Pieces side by side along one axis, the mirror of ``split``: the joined axis is blocks of the pieces'
        common length, each block fixed in place (which piece is which is fixed by the code), and the units
        inside the blocks move alike in every piece. A U-Net's skip ``cat([up, skip], 1)`` so keeps both halves
        permuted, by one shared permutation; DenseNet's and Inception's joins likewise by their common width."""
        ins = _refs(a["tensors"])
        so = self.shapes[out]
        O = self.axes(out)
        dim = int(a.get("dim", 0)) % len(so)
        if name == "stack":
            for vid in ins:
                self.union_all(self.axes(vid), O[:dim] + O[dim + 1:])
            return self.freeze_vars([], [O[dim]], None)
        pieces = [vid for vid in ins if len(self.shapes[vid]) == len(so)]  # torch.cat skips empty 1-D tensors
        for vid in pieces:
            for i, v in enumerate(self.axes(vid)):
                if i != dim:
                    self.union(v, O[i])
        lengths = [self.shapes[vid][dim] for vid in pieces if self.shapes[vid][dim] > 0]
        unit = math.gcd(*lengths) if lengths else 0
        if unit <= 1 or sum(lengths) != so[dim]:
            # The joined axis holds several groups side by side with no common block length to share.
            reason = (f"concatenation along axis {dim}, the joined groups are left unpermuted"
                      + (f" ({_ROPE_HINT})" if dim == len(so) - 1 and len(so) > 2 else ""))
            return self.freeze_vars([self.ax(vid, dim) for vid in pieces], [O[dim]], reason)
        blocks, inner = self.segment(O[dim], so[dim] // unit, unit, name)
        self.freeze_vars([], [blocks], None)
        for vid in pieces:
            n = self.shapes[vid][dim]
            if n == 0:
                continue
            own = self.segment(self.ax(vid, dim), n // unit, unit, name)
            self.freeze_vars([], [own[0]], None)
            self.union(inner, own[1])

    def glu(self, a, x, out):
        """glu(x, dim) = a * sigmoid(b) for the halves (a, b) of ``dim``: unit j of a meets unit j of b only, so
        the axis is (2 fixed halves, n) and the units move alike in both halves and in the output."""
        X, O = self.axes(x), self.axes(out)
        dim = int(a.get("dim", -1)) % len(X)
        self.union_all(X[:dim] + X[dim + 1:], O[:dim] + O[dim + 1:])
        halves, inner = self.segment(X[dim], 2, self.shapes[out][dim], "glu")
        self.freeze_vars([], [halves], None)
        self.union(inner, O[dim])

    def repeat(self, a, x, out):
        """x.repeat(r0, r1, ...) tiles x: each output axis is (r copies, the input's axis), copies fixed in place.
        InstanceNorm repeats its weight over the batch this way before a batch norm of (1, B*C, ...)."""
        X, O = self.axes(x), self.axes(out)
        reps = list(a.get("repeats") or ())
        lead = len(O) - len(X)
        if lead < 0 or len(reps) != len(O):
            return self.unknown("repeat", [x], [out])
        self.freeze_vars([], O[:lead], None)  # new leading axes are copies
        for i, v in enumerate(X):
            copies, inner = self.segment(O[lead + i], int(reps[lead + i]), self.shapes[x][i], "repeat")
            self.freeze_vars([], [copies], None)
            self.union(inner, v)

    def select(self, a, x, out):
        X, O = self.axes(x), self.axes(out)
        dim = int(a["dim"]) % len(X)
        self.union_all(X[:dim] + X[dim + 1:], O)
        self.freeze_vars([X[dim]], [], None)

    def slice(self, name, a, x, out):
        X, O = self.axes(x), self.axes(out)
        dim = int(a.get("dim", 0)) % len(X)
        self.union_all(X[:dim] + X[dim + 1:], O[:dim] + O[dim + 1:])
        n, m = self.shapes[x][dim], self.shapes[out][dim]
        start, step = a.get("start"), a.get("step", 1)
        start = 0 if start is None else int(start)
        if name == "narrow":
            start, step = int(a.get("start", 0)), 1
        start = start + n if start < 0 else start
        if n == m:
            self.union(X[dim], O[dim])  # a full slice keeps the axis
        elif step == 1 and 1 < m < n and n % m == 0 and start % m == 0:
            # A whole block, as one piece of a split (Swin v2 zeroes the k third of its fused qkv bias):
            # the axis is (n/m fixed blocks, m units) and the units move with the slice's.
            blocks, inner = self.segment(X[dim], n // m, m, name)
            self.freeze_vars([], [blocks], None)
            self.union(inner, O[dim])
        else:
            self.freeze_vars([X[dim]], [O[dim]], f"{name} takes part of axis {dim}, which is left unpermuted"
                                                 + (f" ({_ROPE_HINT})" if dim == len(X) - 1 else ""))

    def pad(self, a, x, out):
        X, O = self.axes(x), self.axes(out)
        if len(X) != len(O):
            return self.unknown("pad", [x], [out])
        pad = list(a.get("pad", a.get("padding", ())))
        # (left, right) pairs from the last axis backwards; an axis padded by (0, 0) is left as it is
        # (Swin pads (B, H, W, C) on H and W with F.pad(x, (0, 0, 0, r, 0, b))).
        padded = {len(X) - 1 - i for i in range(len(pad) // 2) if pad[2 * i] or pad[2 * i + 1]}
        kept = [i for i in range(len(X)) if i not in padded]
        self.union_all([X[i] for i in kept], [O[i] for i in kept])
        self.freeze_vars([X[i] for i in padded], [O[i] for i in padded],
                         None if not padded or min(padded) >= 2 else "padding of the channel axis")

    # -- result ------------------------------------------------------------------------------
    def settle_splits(self) -> dict[Any, list]:
        """Root of each segmented class -> its parts' roots, row-major.

        A fixed long axis fixes its parts; parts all fixed fix the long axis; some fixed parts leave the
        others permutable (RoPE fixes the dims inside q and k heads, not the heads). Two decompositions of
        one class meet at their common refinement; where none exists, or a class would contain itself,
        everything involved is fixed.
        """
        find, frozen = self.uf.find, self.uf.is_frozen
        splits = list(self.splits)
        for _ in range(10_000):
            changed = False
            decomp: dict[Any, int] = {}
            kept: list = []
            for long, parts, sizes, note in splits:
                r = find(long)
                if frozen(r):
                    if any(not frozen(p) for p in parts):
                        self.freeze_vars([], parts, None)
                        changed = True
                    continue
                roots = [find(p) for p in parts]
                if all(frozen(p) for p in roots):
                    self.freeze_vars([], [long], None)
                    changed = True
                    continue
                if r in roots or len(set(roots)) < len(roots):
                    self.lost(r, sizes, note, "an axis that would contain itself")
                    self.freeze_vars([], [long, *parts], None)
                    changed = True
                    continue
                if r not in decomp:
                    decomp[r] = len(kept)
                    kept.append((long, parts, sizes, note))
                    continue
                _, parts2, sizes2, note2 = kept[decomp[r]]
                if sizes2 == sizes:
                    for p, p2 in zip(parts, parts2):
                        if find(p) != find(p2):
                            self.union(p, p2)
                            changed = True
                    continue
                atoms = _refinement(list(sizes), list(sizes2))
                changed = True
                if atoms is None:
                    self.lost(r, sizes, note, f"also split into {list(sizes2)} ({note2})")
                    self.freeze_vars([], [long, *parts, *parts2], None)
                    kept[decomp[r]] = (long, [], (), note)
                    continue
                new = [self.fresh(n) for n in atoms]
                for ps, ss, nt in ((parts, sizes, note), (parts2, sizes2, note2)):
                    for p, run in zip(ps, _runs(list(ss), atoms)):
                        if len(run) == 1:
                            self.union(p, new[run[0]])
                        else:
                            kept.append((p, [new[k] for k in run], tuple(atoms[k] for k in run), nt))
                kept[decomp[r]] = (long, new, tuple(atoms), note)
            splits = [s for s in kept if s[1]]
            if not changed:
                out = {find(long): [find(p) for p in parts] for long, parts, _, _ in splits}
                bad = self.unwritable(out)
                if not bad:
                    self.splits = splits
                    return out
                self.freeze_vars([], bad, None)
        raise SpecInferenceError("inference did not settle the segmented axes; write the spec by hand")

    def leaves(self, r, decomp, stack=()) -> list | None:
        """The parts a class is made of, all the way down: [(root or None when fixed, size)]; None on a cycle."""
        if self.uf.is_frozen(r):
            return [(None, r)]
        if r not in decomp:
            return [(r, r)]
        if r in stack:
            return None
        out = []
        for p in decomp[r]:
            sub = self.leaves(p, decomp, (*stack, r))
            if sub is None:
                return None
            out += sub
        return out

    def unwritable(self, decomp) -> list:
        """Variables to fix so that every segmented axis is a spec entry: no cycle, one None run, no repeats."""
        bad = []
        for r in decomp:
            parts = self.leaves(r, decomp)
            if parts is None:
                bad.append(r)
                continue
            entry = _merge_fixed([g for g, _ in parts])
            named = [g for g in entry if g is not None]
            if len(entry) - len(named) > 1 or len(set(named)) < len(named):
                bad += named
                members = self.members(r)
                if members:
                    self.notes.append(f"{', '.join(members[:4])}: segmented into parts that a spec entry cannot "
                                      "describe (fixed parts on both sides of a permuted one), left unpermuted")
        return bad

    def members(self, r) -> list[str]:
        return sorted({v[1] for v in self.uf.parent if v[0] == "tensor" and self.uf.find(v) == r})

    def lost(self, r, sizes, note, why):
        members = self.members(r)
        if members and not self.uf.is_frozen(r):
            self.notes.append(f"{', '.join(members[:4])}: {note} splits them into {list(sizes)}, but they are "
                              f"{why}; left unpermuted")

    def build(self) -> PermutationSpec:
        decomp = self.settle_splits()
        self._root_size = None  # the classes are final now
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
        noted = {self.uf.find(v) for v in self.noted}
        for name, shape in self._state_shapes.items():
            entry = []
            for axis in range(len(shape)):
                v = ("tensor", name, axis)
                if name in unused or v not in self.uf.parent or self.uf.is_frozen(v) or shape[axis] == 1:
                    entry.append(None)
                    continue
                root = self.uf.find(v)
                base = name.rsplit(".", 1)[0] if axis == 0 else f"{name}:{axis}"
                if root in decomp:
                    leaves = self.leaves(root, decomp)
                    self.note_fixed_part(root, leaves, noted)
                    parts = _merge_fixed([g for g, _ in leaves])
                    if len(parts) == 1:  # every other part has length 1
                        entry.append(label(parts[0], base) if parts[0] is not None else None)
                        continue
                    tags = _part_tags(parts)
                    pair = tuple(label(g, f"{base}:{t}") if g is not None else None for g, t in zip(parts, tags))
                    for g, lab in zip(parts, pair):
                        if g is not None:
                            group_sizes[lab] = self.size_of(g)
                    entry.append(pair)
                else:
                    entry.append(label(root, base))
            axes[name] = tuple(entry)
        notes = tuple(dict.fromkeys(self.notes))
        return PermutationSpec(axes=axes, shapes=self._state_shapes, unpermuted=notes, group_sizes=group_sizes)

    def note_fixed_part(self, root, leaves, noted):
        fixed = [r for g, r in leaves if g is None and r in noted]
        if fixed and len(fixed) < len(leaves):
            members = self.members(root)
            sizes = [self.size_of(r) for _, r in leaves]
            self.notes.append(f"{', '.join(members[:4])}: split into {sizes}; only some of the parts are permuted, "
                              "the rest is fixed elsewhere (a position-dependent rotation such as RoPE, or an op "
                              "not understood)")

    def size_of(self, root) -> int:
        if getattr(self, "_root_size", None) is None:
            self._root_size = {self.uf.find(v): n for v, n in self.size.items()}
        return self._root_size[root]


def _merge_fixed(parts: list) -> list:
    """Adjacent fixed parts are one fixed part; parts of length 1 were never recorded."""
    out: list = []
    for g in parts:
        if g is None and out and out[-1] is None:
            continue
        out.append(g)
    return out


def _part_tags(parts: list) -> list[str]:
    """Names for a segmented axis's permuted parts: blocks and within for two, part0, part1, ... for more."""
    named = [g for g in parts if g is not None]
    tags = iter(["blocks", "within"] if len(named) == 2 else [f"part{i}" for i in range(len(named))])
    return [next(tags) if g is not None else "" for g in parts]


def infer_spec(model: nn.Module, example_input) -> PermutationSpec:
    """The permutation spec of ``model``, derived from one forward pass on ``example_input``.

    Covers parameters and buffers, and attention heads (segmented axes, see
    :class:`~raytraj.perm.spec.PermutationSpec`). The input's axes and the answer's class axis
    are never permuted; ops that are not understood leave the axes they touch unpermuted and are
    reported in ``spec.unpermuted``. Verify the result with :func:`check_spec`.

    Args:
        model: the module; a copy runs in eval mode, so the caller's model is not changed.
        example_input: a batch of any dtype (token ids stay integers), a tuple of positional
            inputs, or a dict of keyword inputs. The model may return a tensor, a tuple, a dict or
            a ModelOutput; its answer is the ``logits`` entry, or else the first tensor.

    Returns:
        the spec; it warns (SpecInferenceWarning) when it left axes unpermuted.

    Raises:
        SpecInferenceError: the model fails on the example, or returns no tensor.
    """
    try:
        spec = _Tracer(model).run(example_input)
    except SpecInferenceError:
        raise
    except Exception as e:  # noqa: BLE001 - a gap in the rules must not surface as a traceback
        raise SpecInferenceError(
            f"inference failed on {type(model).__name__} ({type(e).__name__}: {e}); write the spec by hand with "
            "PermutationSpec.from_axes, or use --method naive, which needs none"
        ) from e
    if spec.unpermuted:
        warnings.warn("infer_spec left axes unpermuted:\n  " + "\n  ".join(spec.unpermuted), SpecInferenceWarning,
                      stacklevel=2)
    return spec
