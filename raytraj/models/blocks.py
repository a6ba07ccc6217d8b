"""Pieces the convolutional zoo models share."""

from __future__ import annotations

import torch.nn as nn


def classifier(c_in: int, hidden: tuple[int, ...], num_classes: int) -> tuple[nn.Sequential, nn.Linear]:
    """Hidden Linear+ReLU layers (``fc``) and the classifier ``head`` on a flat feature of width c_in."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(c_in, width), nn.ReLU()]
        c_in = width
    return nn.Sequential(*layers), nn.Linear(c_in, num_classes)
