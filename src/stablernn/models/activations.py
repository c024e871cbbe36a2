"""Activations of paper 000 eq. 1 with their slope bound ``g`` (``0 <= phi' <= g``), from the
one table of :data:`stablernn.engine.plans.ACTIVATIONS`."""

from __future__ import annotations

from stablernn._checks import check_choice
from stablernn.engine.plans import ACTIVATIONS


def activation(name: str):
    """``(function, slope_bound)`` for the activation ``name``."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name].function, ACTIVATIONS[name].slope_bound
