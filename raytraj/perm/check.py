"""Prove a spec on a model: a random permutation must leave the model's function unchanged."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .apply import apply_permutation, permute_tensor, random_permutation
from .spec import PermutationSpec, SpecError


class SpecCheckError(SpecError):
    """The model's outputs change under a permutation the spec allows."""


def check_spec(
    model: nn.Module, spec: PermutationSpec, example_input, *, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-5
) -> None:
    """Raise a SpecCheckError naming the first tensor that breaks permutation invariance.

    The model is run in eval mode (BatchNorm uses running stats) and in train mode (batch
    stats, and the running stats it updates must come out permuted the same way; Dropout
    stays off, since its random masks differ between the two runs). Each leaf
    module's output is compared with the original's, permuted by the group of its own
    parameters, so the error points at the first layer whose spec entry is wrong.

    Args:
        model: the model the spec describes.
        spec: the spec to prove.
        example_input: a batch the model accepts (a tensor, or a tuple of its arguments).
        seed: seeds the random permutation and the random BatchNorm statistics.
        rtol, atol: how close the permuted model's outputs must come to the original's.

    Returns:
        None; raises SpecCheckError when the spec is wrong.
    """
    state = model.state_dict()
    spec.check_tensors(state, complete=True, what=f"{type(model).__name__}.state_dict()")
    gen = torch.Generator().manual_seed(seed)
    perm = random_permutation(spec, gen)
    # Random running stats, so that a wrong buffer entry changes eval-mode outputs.
    state = {k: _randomize_stat(k, v, gen) for k, v in state.items()}
    permuted_state = apply_permutation(spec, perm, state)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    for mode in ("eval", "train"):
        original, permuted = copy.deepcopy(model), copy.deepcopy(model)
        original.load_state_dict(state)
        permuted.load_state_dict(permuted_state)
        for m in (original, permuted):
            m.train(mode == "train")
            _quiet_dropout(m)
        out_a, trace_a = _run_traced(original, inputs)
        out_b, trace_b = _run_traced(permuted, inputs)
        for (mod_name, mod, a), (_, _, b) in zip(trace_a, trace_b):
            expected = _expected_output(spec, perm, mod_name, mod, a)
            if expected is not None and not _close(expected, b, rtol, atol):
                names = [f"{mod_name}.{k}" for k, _ in mod.named_parameters(recurse=False)]
                raise SpecCheckError(
                    f"{mod_name}: output changes under the permutation in {mode} mode; check the spec entries "
                    f"of {', '.join(names) or mod_name}"
                )
        if not _close(out_a, out_b, rtol, atol):
            raise SpecCheckError(f"model output changes under the permutation in {mode} mode")
        if mode == "train":
            expected_state = apply_permutation(spec, perm, original.state_dict())
            for name, value in permuted.state_dict().items():
                if not _close(expected_state[name], value, rtol, atol):
                    raise SpecCheckError(f"{name}: buffer updated in train mode does not move with its spec entry")


def _quiet_dropout(model: nn.Module) -> None:
    """Dropout in eval mode: in train mode the two copies would draw different masks, while
    BatchNorm stays in train mode, where its batch statistics and running-stat updates are checked."""
    for m in model.modules():
        if isinstance(m, (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)):
            m.eval()


def _randomize_stat(name: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if name.endswith("running_mean"):
        return torch.randn(t.shape, generator=gen)
    if name.endswith("running_var"):
        return torch.rand(t.shape, generator=gen) + 0.5
    return t.clone()


def _run_traced(model: nn.Module, inputs):
    """Run the model, recording each parameterised leaf module's output in call order."""
    trace = []
    hooks = []
    for name, mod in model.named_modules():
        if next(mod.children(), None) is None and next(mod.parameters(recurse=False), None) is not None:
            hooks.append(mod.register_forward_hook(
                lambda m, _inp, out, name=name: trace.append((name, m, out.detach().clone()))
            ))
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, trace


def _expected_output(spec, perm, mod_name, mod, out):
    """The original module output moved into the permuted model's unit order, or None if unknown."""
    weight_name = f"{mod_name}.weight"
    if weight_name not in spec.axes or not isinstance(out, torch.Tensor) or out.dim() < 2:
        return None
    # Linear, the norms over the last axis and Embedding write features last; convs and BatchNorm at dim 1.
    last = isinstance(mod, (nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.Embedding))
    group = spec.axes[weight_name][1 if isinstance(mod, nn.Embedding) else 0]
    axes = (None,) * (out.dim() - 1) + (group,) if last else (None, group)
    return out if group is None else permute_tensor(out, axes, perm)


def _close(a, b, rtol, atol) -> bool:
    if isinstance(a, torch.Tensor):
        # Permuting units reorders floating-point sums, so the tolerance scales with the values.
        scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol * scale)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol, atol) for k in a)
    return a == b
