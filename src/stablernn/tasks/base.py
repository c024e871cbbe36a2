"""The object every task returns, the kinds of task, and how a training loop draws batches.

Two kinds of split dataset exist:

- a :class:`torch.utils.data.TensorDataset` of ``(inputs, targets)`` (most tasks), and
- a :class:`BatchDataset`: a split that builds its batches itself, because its samples are
  not a fixed tensor (``noise-cifar10`` draws fresh noise every time; ``timit`` pads utterances
  of different lengths per batch and returns a mask).

A training loop handles both through two functions, and nothing else:

- ``get_batch(dataset, indices, generator)`` -> :class:`Batch` ``(inputs, targets, mask)``;
  ``mask`` is ``None`` unless the task pads (then ``(batch, T)`` bool, True where a step
  counts). ``generator`` (a CPU :class:`torch.Generator`) is used only by datasets that draw
  random numbers per batch; pass one the loop owns and checkpoints (its ``get_state()``), so a
  resumed run draws the same noise. With a TensorDataset this is exactly
  ``inputs[indices], targets[indices]``.
- ``take(dataset, count)``: the first ``count`` samples (``max_train_samples``).

``len(dataset)`` is the number of samples in both cases. A :class:`BatchDataset` has no
``.tensors``; asking for it raises a TypeError that names :func:`get_batch`.

What the targets are and how they are scored depends on :attr:`SequenceTask.kind`; see
:data:`KINDS` and :mod:`stablernn.tasks.objectives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from stablernn._checks import check_choice

# kind -> (what the model outputs, the targets, the loss, the metrics reported)
KINDS: dict[str, str] = {
    "classification": (
        "inputs float (N, T, F); targets long (N,) class indices; the model outputs "
        "(N, output_size) logits after the last step; cross-entropy; accuracy"
    ),
    "regression": (
        "inputs float (N, T, F); targets float (N, output_size); the model outputs "
        "(N, output_size) after the last step; mean squared error"
    ),
    "sequence-classification": (
        "inputs float (N, T, F); targets long (N, T), one class per step; the model outputs "
        "(N, T, output_size) logits, one per step; cross-entropy averaged over steps; "
        "per-step accuracy"
    ),
    "sequence-regression": (
        "inputs float (N, T, F); targets float (N, T, output_size); the model outputs "
        "(N, T, output_size), one per step; mean squared error over the steps the mask keeps "
        "(all elements of those steps averaged)"
    ),
    "language-model": (
        "inputs long (N, T) token ids (input_size = vocabulary size: embed them, or one-hot "
        "with torch.nn.functional.one_hot(inputs, input_size).float()); targets long (N, T), "
        "the next token; the model outputs (N, T, vocabulary) logits; cross-entropy in nats "
        "per token; bits per character (character level) or perplexity (word level)"
    ),
}

PER_STEP_KINDS = frozenset({"sequence-classification", "sequence-regression", "language-model"})
CLASSIFICATION_KINDS = frozenset({"classification", "sequence-classification", "language-model"})


class Batch(NamedTuple):
    """One batch: ``inputs``, ``targets`` and a ``(batch, T)`` bool ``mask`` or ``None``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None


class BatchDataset(Dataset):
    """A split that builds batches itself (see the module docstring).

    Subclasses implement ``__len__``, ``batch(indices, generator=None) -> Batch`` and
    ``subset(indices)``; ``__getitem__`` (one sample, for ``torch.utils.data.DataLoader``
    users) and ``collate`` (a list of samples -> a :class:`Batch`) follow from ``batch``.
    """

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets, _ = self.batch(torch.tensor([index]))
        return inputs[0], targets[0]

    @staticmethod
    def collate(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        return Batch(torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]))

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        raise NotImplementedError  # pragma: no cover - abstract

    def subset(self, indices: torch.Tensor) -> BatchDataset:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def tensors(self):
        raise TypeError(
            f"{type(self).__name__} has no fixed tensors (it builds each batch, e.g. drawing "
            "fresh noise or padding); use stablernn.tasks.get_batch(dataset, indices, generator)"
        )


def get_batch(dataset: Dataset, indices: torch.Tensor | slice,
              generator: torch.Generator | None = None) -> Batch:
    """The samples ``indices`` of a split, for any kind of split (see the module docstring)."""
    if isinstance(indices, slice):
        indices = torch.arange(len(dataset))[indices]
    indices = torch.as_tensor(indices, dtype=torch.long)
    if isinstance(dataset, BatchDataset):
        return dataset.batch(indices, generator)
    if isinstance(dataset, TensorDataset):
        inputs, targets = dataset.tensors
        return Batch(inputs[indices], targets[indices], None)
    raise TypeError(
        f"expected a TensorDataset of (inputs, targets) or a BatchDataset, "
        f"got {type(dataset).__name__}"
    )


def take(dataset: Dataset, count: int | None) -> Dataset:
    """The first ``count`` samples of a split (all of it when ``count`` is None or larger)."""
    if count is None or count >= len(dataset):
        return dataset
    if isinstance(dataset, BatchDataset):
        return dataset.subset(torch.arange(count))
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(tensor[:count] for tensor in dataset.tensors))
    raise TypeError(f"cannot take samples of a {type(dataset).__name__}")


def iterate_batches(dataset: Dataset, batch_size: int,
                    generator: torch.Generator | None = None):
    """Consecutive batches of a split in order (for evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield get_batch(dataset, torch.arange(start, min(start + batch_size, len(dataset))),
                        generator)


@dataclass(frozen=True)
class SequenceTask:
    """A sequence task: train/validation/test splits and what they mean.

    ``inputs`` are batch first, ``(samples, sequence_length, input_size)`` float32, except for
    ``kind="language-model"`` where they are ``(samples, sequence_length)`` token ids.
    ``kind`` says what the targets are and how they are scored (:data:`KINDS`); for
    classification, targets are class indices and ``output_size`` is the number of classes.
    Splits are TensorDatasets or :class:`BatchDataset`\\ s: read them with :func:`get_batch`.
    ``info`` holds what a user may need besides the tensors (a vocabulary, normalization
    statistics, a baseline loss), JSON-friendly where possible.
    """

    name: str
    train: Dataset
    validation: Dataset
    test: Dataset
    input_size: int
    output_size: int
    sequence_length: int
    kind: str = "classification"
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def per_step(self) -> bool:
        """Whether the model must output one prediction per step (not only after the last)."""
        return self.kind in PER_STEP_KINDS

    def summary(self) -> str:
        sizes = f"{len(self.train)}/{len(self.validation)}/{len(self.test)}"
        return (
            f"{self.name}: {self.description} (train/validation/test {sizes}, "
            f"length {self.sequence_length}, {self.input_size} feature(s), "
            f"{self.output_size} outputs, {self.kind})"
        )


VALIDATION_FROM = ("start", "end")


def split_indices(
    count: int, validation: int, test: int, seed: int, validation_from: str = "start"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffled split (``numpy.random.RandomState(seed)``) into train/validation/test.

    ``order = RandomState(seed).permutation(count)``, then (training keeps that shuffled order):

    - ``validation_from="start"`` (the default): validation is ``order[:validation]``, test
      ``order[validation:validation + test]``, training the rest, ``order[validation + test:]``;
    - ``"end"`` (the official Lipschitz RNN code: ``R = RandomState(1234).permutation(n)``,
      training ``R[:n - 2000]``, validation ``R[n - 2000:]``): validation is the last
      ``validation`` of the shuffle, ``order[count - validation:]``, test the ``test`` before
      it, training the first ``count - validation - test``.
    """
    check_choice("task option validation_from", validation_from, VALIDATION_FROM)
    if validation + test >= count:
        raise ValueError(f"validation + test ({validation + test}) must be < samples ({count})")
    order = np.random.RandomState(seed).permutation(count)
    if validation_from == "end":
        kept = count - validation - test
        return order[:kept], order[count - validation:], order[kept:count - validation]
    return order[validation + test:], order[:validation], order[validation:validation + test]


def pixel_sequences(
    images: np.ndarray, labels: np.ndarray, max_value: float, permutation: torch.Tensor | None,
    pixels_per_step: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened images -> ``pixels_per_step`` consecutive pixels (of the possibly permuted
    order) per step, scaled to [0, 1] by ``max_value``.

    The same scaling is used for ordered and permuted variants (the official Lipschitz RNN code
    fed permuted MNIST as raw 0-255 and ordered as 0-1).
    """
    pixels = torch.as_tensor(images, dtype=torch.float32).reshape(len(images), -1) / max_value
    if pixels.shape[1] % pixels_per_step:
        raise ValueError(f"task option pixels_per_step must divide the {pixels.shape[1]} pixels "
                         f"of an image, got {pixels_per_step}")
    if permutation is not None:
        pixels = pixels[:, permutation]
    return (pixels.reshape(len(images), -1, pixels_per_step),
            torch.as_tensor(labels, dtype=torch.long))


