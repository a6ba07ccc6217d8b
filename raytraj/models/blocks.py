"""Pieces the convolutional zoo models share."""

from __future__ import annotations

import torch.nn as nn

from ..config import ConfigError

INITS = ("kaiming", "torch")


def classifier(c_in: int, hidden: tuple[int, ...], num_classes: int) -> tuple[nn.Sequential, nn.Linear]:
    """Hidden Linear+ReLU layers (``fc``) and the classifier ``head`` on a flat feature of width c_in."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(c_in, width), nn.ReLU()]
        c_in = width
    return nn.Sequential(*layers), nn.Linear(c_in, num_classes)


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise conv and linear layers in place.

    ``torch`` keeps PyTorch's defaults (the official code's): Kaiming-uniform with a=sqrt(5), whose
    weight variance is 1/(3 fan_in), so each ReLU layer shrinks the signal's variance ~6x. Eight
    such layers leave a plain Conv8 with vanishing activations and gradients, and on small data it
    never leaves chance level. ``kaiming`` (He et al.; torchvision's VGG and ResNet do the same)
    keeps the variance through ReLUs, with zero biases, so every zoo depth trains with the default
    recipe. The classifier head keeps PyTorch's default either way.
    """
    if scheme not in INITS:
        raise ConfigError(f"unknown init {scheme!r}; choose one of {INITS}")
    if scheme == "torch":
        return
    head = getattr(model, "head", None)
    head_modules = set(head.modules()) if isinstance(head, nn.Module) else set()
    for m in model.modules():
        if m in head_modules:
            continue
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
