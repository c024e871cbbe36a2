"""How each kind of task is scored (:data:`stablernn.tasks.base.KINDS`).

For one batch, with ``outputs`` the model's output in the shape the kind asks for:

- :func:`loss_sum` -> ``(summed loss, units)``: the batch's loss summed, and how many units it
  was summed over (samples; steps for per-step classification and language models; elements
  of the kept steps for per-step regression). ``loss_sum / units`` is the batch's mean loss,
  to backpropagate; sums and units added over batches give the split's mean exactly.
- :func:`correct` -> ``(correct predictions, predictions)`` for the classification kinds.

A mask (``(batch, T)`` bool, from :func:`~stablernn.tasks.base.get_batch`) drops padded steps.
Language models report ``mean loss`` (nats per token) through
:func:`~stablernn.tasks.text.bits_per_character` or :func:`~stablernn.tasks.text.perplexity`.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from stablernn.tasks.base import CLASSIFICATION_KINDS, KINDS, PER_STEP_KINDS


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"task kind must be one of {', '.join(KINDS)}, got {kind!r}")


def loss_sum(kind: str, outputs: torch.Tensor, targets: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The summed loss of a batch and the number of units it sums over (module docstring)."""
    _check(kind)
    if kind in PER_STEP_KINDS and outputs.dim() < 3:
        raise ValueError(f"a {kind} task needs one output per step (batch, T, outputs), got "
                         f"{tuple(outputs.shape)}")
    if mask is not None:
        outputs, targets = outputs[mask], targets[mask]
    if kind in CLASSIFICATION_KINDS:
        logits = outputs.reshape(-1, outputs.shape[-1])
        labels = targets.reshape(-1)
        return functional.cross_entropy(logits, labels, reduction="sum"), labels.numel()
    return functional.mse_loss(outputs, targets, reduction="sum"), targets.numel()


def mean_loss(kind: str, outputs: torch.Tensor, targets: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """``loss_sum / units``: the loss to backpropagate."""
    total, units = loss_sum(kind, outputs, targets, mask)
    return total / max(units, 1)


def correct(kind: str, outputs: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor | None = None) -> tuple[int, int]:
    """``(correct, predictions)`` by argmax, for the classification kinds."""
    _check(kind)
    if kind not in CLASSIFICATION_KINDS:
        raise ValueError(f"accuracy is defined for {', '.join(sorted(CLASSIFICATION_KINDS))}, "
                         f"not {kind}")
    if mask is not None:
        outputs, targets = outputs[mask], targets[mask]
    hits = outputs.argmax(dim=-1) == targets
    return int(hits.sum().item()), hits.numel()
