"""How many trained parameters a model has, counting only the entries that reach its output."""

from __future__ import annotations

from torch import nn


def count_trained_parameters(module: nn.Module) -> int:
    """Entries of ``module``'s trainable parameters that the model uses.

    A parameter that a submodule multiplies by a fixed 0/1 mask (the feedback matrix B of a
    network of networks, trained only in its kept blocks, paper 000 D.1.1) counts its kept
    entries, as the paper counts them (130K for the Sparse Combo Net 16 x 32: the lower blocks of
    B, not all of it); such submodules name their masks with ``parameter_masks()``, pairs of
    ``(parameter, mask)``. Every other trainable parameter counts in full.
    """
    kept: dict[int, int] = {}
    for submodule in module.modules():
        masks = getattr(submodule, "parameter_masks", None)
        if callable(masks):
            for parameter, mask in masks():
                kept[id(parameter)] = int(mask.count_nonzero())
    return sum(kept.get(id(parameter), parameter.numel())
               for parameter in module.parameters() if parameter.requires_grad)
