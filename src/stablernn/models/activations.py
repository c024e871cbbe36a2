"""Activations of paper 000 eq. 1 with their slope bound ``g`` (``0 <= phi' <= g``)."""

from __future__ import annotations

import torch

from stablernn._checks import check_choice

# name -> (function, slope bound g)
ACTIVATIONS = {
    "relu": (torch.relu, 1.0),
    "tanh": (torch.tanh, 1.0),
    "softplus": (torch.nn.functional.softplus, 1.0),
    "sigmoid": (torch.sigmoid, 0.25),
}


def activation(name: str):
    """``(function, slope_bound)`` for the activation ``name``."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]
