"""Prove a spec on a model: a random permutation must leave the model's function unchanged.

The proof must fail only when the spec is wrong, so the two copies (original and permuted) run
under conditions that remove every other source of difference:

* float64: both copies run in double precision (float inputs cast, integer inputs such as token
  ids kept), so rounding that train-mode BatchNorm magnifies on a few samples at 1x1 resolution
  stays orders of magnitude below the tolerance. A model that cannot run in float64 runs in its
  own dtype, and the tolerance is the caller's.
* no dropout, BatchNorm in train mode: the model stays in train mode, so batch statistics and
  the running-stat updates are checked, while every dropout draws "keep all units" (Dropout
  modules, ``F.dropout`` under ``training``, HF eager attention, and the ``dropout_p`` of
  ``nn.MultiheadAttention`` and ``scaled_dot_product_attention``, caught as ATen ops by a
  TorchDispatchMode, whatever Python code called them). Sharing one random mask cannot work:
  the permuted copy would need the mask permuted, not the same mask.
* one RNG state: both copies run from the same seed, so any other random op draws alike.

When the outputs still differ, the original is run twice under the same conditions. If those
two runs disagree, the error says the check's conditions are at fault (a model that is not
deterministic), not the spec.
"""

from __future__ import annotations

import collections
import copy

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from .apply import apply_permutation, permute_tensor, random_permutation
from .example import call_args, map_tensors, primary_output
from .spec import PermutationSpec, SpecError


class SpecCheckError(SpecError):
    """The model's outputs change under a permutation the spec allows."""


def check_spec(
    model: nn.Module, spec: PermutationSpec, example_input, *, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """Raise a SpecCheckError naming the first tensor that breaks permutation invariance.

    The model is run in eval mode (BatchNorm uses running stats) and in train mode (batch
    stats, and the running stats it updates must come out permuted the same way), with dropout
    off in both, in float64 (see the module docstring). Each leaf module's output is compared
    with the original's, permuted by the group of its own parameters, so the error points at
    the first layer whose spec entry is wrong. The caller's model is not changed.

    Args:
        model: the module the spec describes.
        spec: the spec to prove.
        example_input: a batch: a tensor of any dtype, a tuple of positional inputs, or a dict of
            keyword inputs. The model's answer is its output tensor, or its ``logits``, or its first tensor.
        seed: draws the permutation and the random running statistics.
        rtol, atol: tolerance; ``atol`` is scaled by the largest magnitude of the compared tensor.

    Returns:
        None; raises SpecCheckError when the outputs change, saying whether the spec or the
        check's conditions are at fault.
    """
    state = model.state_dict()
    spec.check_tensors(state, complete=True, what=f"{type(model).__name__}.state_dict()")
    gen = torch.Generator().manual_seed(seed)
    perm = random_permutation(spec, gen)
    # Random running stats, so that a wrong buffer entry changes eval-mode outputs.
    metadata = getattr(state, "_metadata", None)
    state = {k: _randomize_stat(k, v, gen) for k, v in state.items()}
    permuted_state = apply_permutation(spec, perm, state)
    if metadata is not None:  # modules that read their saved version on loading (torchvision's MNASNet)
        state, permuted_state = _with_metadata(state, metadata), _with_metadata(permuted_state, metadata)
    args, kwargs = call_args(example_input)
    if any(t.is_floating_point() for t in state.values()):
        try:
            return _prove(model, spec, perm, state, permuted_state, (args, kwargs), True, seed, rtol, atol)
        except SpecCheckError:
            raise
        except Exception:  # noqa: BLE001 - code that makes float32 tensors of its own: prove in its dtype
            pass
    _prove(model, spec, perm, state, permuted_state, (args, kwargs), False, seed, rtol, atol)


def _prove(model, spec, perm, state, permuted_state, inputs, precise: bool, seed, rtol, atol) -> None:
    """Both modes, in float64 when ``precise``; raises SpecCheckError at the first difference."""
    if precise:
        inputs = map_tensors(inputs, _to_double)
    for mode in ("eval", "train"):
        original, permuted = copy.deepcopy(model), copy.deepcopy(model)
        original.load_state_dict(state)
        permuted.load_state_dict(permuted_state)
        if precise:
            original, permuted = original.double(), permuted.double()
        for m in (original, permuted):
            m.train(mode == "train")
        out_a, trace_a = _run_traced(original, inputs, seed)
        out_b, trace_b = _run_traced(permuted, inputs, seed)
        for (mod_name, mod, a), (_, _, b) in zip(trace_a, trace_b):
            expected = _expected_output(spec, perm, mod_name, mod, a)
            if expected is not None and not _close(expected, b, rtol, atol):
                names = [f"{mod_name}.{k}" for k, _ in mod.named_parameters(recurse=False)]
                _blame(model, state, inputs, precise, mode, seed, rtol, atol,
                       f"{mod_name}: output changes under the permutation in {mode} mode; check the spec entries "
                       f"of {', '.join(names) or mod_name}")
        if not _close(primary_output(out_a), primary_output(out_b), rtol, atol):
            _blame(model, state, inputs, precise, mode, seed, rtol, atol,
                   f"model output changes under the permutation in {mode} mode{_deviation(out_a, out_b)}")
        if mode == "train":
            expected_state = apply_permutation(spec, perm, original.state_dict())
            for name, value in permuted.state_dict().items():
                if not _close(expected_state[name], value, rtol, atol):
                    raise SpecCheckError(f"{name}: buffer updated in train mode does not move with its spec entry "
                                         "(the spec is at fault)")


class _NoDropout(TorchDispatchMode):
    """Every dropout keeps all units: Bernoulli draws give ones, fused kernels get ``dropout_p=0``.

    On the ATen level every dropout is one of these ops, whichever module or function asked for it.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        packet = func.overloadpacket
        if packet is torch.ops.aten.bernoulli_:
            return args[0].fill_(1)
        if packet is torch.ops.aten.bernoulli:
            return torch.ones_like(args[0])
        if packet is torch.ops.aten.native_dropout:
            return args[0].clone(), torch.ones_like(args[0], dtype=torch.bool)
        names = [a.name for a in func._schema.arguments]
        if "dropout_p" in names:
            at = names.index("dropout_p")
            if at < len(args):
                args = (*args[:at], 0.0, *args[at + 1:])
            else:
                kwargs["dropout_p"] = 0.0
        return func(*args, **kwargs)


def _with_metadata(state: dict, metadata) -> dict:
    """``state`` as ``load_state_dict`` gets it from ``state_dict()``: with the modules' versions."""
    out = collections.OrderedDict(state)
    out._metadata = metadata  # type: ignore[attr-defined]
    return out


def _run_traced(model: nn.Module, inputs, seed: int):
    """Run the model without dropout from one RNG state, recording each parameterised leaf module's
    output in call order."""
    trace = []
    hooks = []
    for name, mod in model.named_modules():
        if next(mod.children(), None) is None and next(mod.parameters(recurse=False), None) is not None:
            hooks.append(mod.register_forward_hook(
                lambda m, _inp, out, name=name: trace.append((name, m, out.detach().clone()))
                if isinstance(out, torch.Tensor) else None
            ))
    args, kwargs = inputs
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), _NoDropout():
            torch.manual_seed(seed)
            out = model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return out, trace


def _to_double(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.is_floating_point() else t


def _blame(model, state, inputs, precise, mode, seed, rtol, atol, message):
    """Raise the check's error, saying whether the spec or the check's conditions are at fault."""
    runs = []
    for _ in range(2):
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        if precise:
            m = m.double()
        m.train(mode == "train")
        runs.append(primary_output(_run_traced(m, inputs, seed)[0]))
    if not _close(runs[0], runs[1], rtol, atol):
        raise SpecCheckError(
            f"{message}. The check's conditions are at fault, not necessarily the spec: two runs of the unpermuted "
            f"model from one seed, without dropout, already differ{_deviation(runs[0], runs[1])}; make forward() "
            "deterministic (random ops other than dropout) to prove a spec on it")
    where = "in float64" if precise else "in the model's own dtype (it does not run in float64)"
    raise SpecCheckError(f"{message}. The spec is at fault: the unpermuted model repeats its output exactly, run "
                         f"{where} without dropout")


def _deviation(a, b) -> str:
    a, b = primary_output(a), primary_output(b)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and a.numel():
        diff = float((a.double() - b.double()).abs().max())
        return f" (max difference {diff:.3g}, largest value {float(a.abs().max()):.3g})"
    return ""


def _randomize_stat(name: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("running_mean"):
        return torch.randn(t.shape, generator=gen).to(t.dtype)
    if name.endswith("running_var"):
        return (torch.rand(t.shape, generator=gen) + 0.5).to(t.dtype)
    return t.clone()


def _expected_output(spec, perm, mod_name, mod, out):
    """The original module output moved into the permuted model's unit order, or None if unknown."""
    weight_name = f"{mod_name}.weight"
    if weight_name not in spec.axes or not isinstance(out, torch.Tensor) or out.dim() < 2:
        return None
    # Linear, the norms over the last axis and Embedding write features last; convs and BatchNorm at dim 1.
    # Other modules (HF's Conv1D keeps its weight transposed) are judged by the outputs after them.
    last = isinstance(mod, (nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.Embedding))
    first = isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm, nn.GroupNorm))
    if not (last or first):
        return None
    group = spec.axes[weight_name][1 if isinstance(mod, nn.Embedding) else 0]
    axes = (None,) * (out.dim() - 1) + (group,) if last else (None, group) + (None,) * (out.dim() - 2)
    if out.shape[-1 if last else 1] != spec.shapes[weight_name][1 if isinstance(mod, nn.Embedding) else 0]:
        return None
    return out if group is None else permute_tensor(out, axes, perm)


def _close(a, b, rtol, atol) -> bool:
    if isinstance(a, torch.Tensor):
        # Permuting units reorders floating-point sums, so the tolerance scales with the values.
        scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
        return (isinstance(b, torch.Tensor) and a.shape == b.shape
                and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol * scale))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol, atol) for k in a)
    return a == b
