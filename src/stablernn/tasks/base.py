"""The object every task returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset


@dataclass(frozen=True)
class SequenceTask:
    """A sequence task: train/validation/test splits of ``(inputs, targets)`` tensors.

    ``inputs`` are ``(samples, sequence_length, input_size)`` (batch first), float32.
    For classification, targets are class indices and ``output_size`` is the number of classes.
    """

    name: str
    train: TensorDataset
    validation: TensorDataset
    test: TensorDataset
    input_size: int
    output_size: int
    sequence_length: int
    kind: str = "classification"
    description: str = ""

    def summary(self) -> str:
        sizes = f"{len(self.train)}/{len(self.validation)}/{len(self.test)}"
        return (
            f"{self.name}: {self.description} (train/validation/test {sizes}, "
            f"length {self.sequence_length}, {self.input_size} feature(s), "
            f"{self.output_size} outputs)"
        )


def split_indices(
    count: int, validation: int, test: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffled split (``numpy.random.RandomState(seed)``) into train/validation/test."""
    if validation + test >= count:
        raise ValueError(f"validation + test ({validation + test}) must be < samples ({count})")
    order = np.random.RandomState(seed).permutation(count)
    return order[validation + test:], order[:validation], order[validation:validation + test]


def pixel_sequences(
    images: np.ndarray, labels: np.ndarray, max_value: float, permutation: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened images -> one pixel per step, scaled to [0, 1] by ``max_value``.

    The same scaling is used for ordered and permuted variants (the official Lipschitz RNN code
    fed permuted MNIST as raw 0-255 and ordered as 0-1).
    """
    pixels = torch.as_tensor(images, dtype=torch.float32).reshape(len(images), -1) / max_value
    if permutation is not None:
        pixels = pixels[:, permutation]
    return pixels.unsqueeze(-1), torch.as_tensor(labels, dtype=torch.long)
