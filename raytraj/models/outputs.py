"""What a model returns, read as logits: the adapter between stock models and raytraj.

raytraj needs one ``(batch, classes)`` tensor from every forward pass (to train, to take
gradients, to score, to recalibrate BatchNorm). Stock models return other things: Hugging Face
models a ``ModelOutput`` (a dict with attributes), some models a dict or a tuple. The rule,
applied the same way in training, transfer, evaluation and the recorder's checks:

* a tensor is the logits;
* a mapping (``ModelOutput`` included) gives its ``logits`` entry, else its first tensor value;
* a tuple or list gives its first tensor (``(logits, aux)``, HF's ``return_dict=False``).

Anything else is a ConfigError naming what came back. No wrapper is needed around such models.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..config import ConfigError

LOGITS_KEY = "logits"


def logits_of(out: Any) -> torch.Tensor:
    """The logits tensor in a model's output (see the module's rule)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get(LOGITS_KEY), torch.Tensor):
            return out[LOGITS_KEY]
        found = next((v for v in out.values() if isinstance(v, torch.Tensor)), None)
    elif isinstance(out, (tuple, list)):
        found = next((v for v in out if isinstance(v, torch.Tensor)), None)
    else:
        found = None
    if found is None:
        raise ConfigError(f"the model returned a {type(out).__name__} holding no tensor; return logits "
                          "(batch, classes), a dict/ModelOutput with 'logits', or a tuple whose first tensor "
                          "is the logits")
    return found
