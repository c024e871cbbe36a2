"""Generated long-memory tasks: the adding problem and the copy task.

Each split is drawn by its own generator, ``numpy.random.default_rng([seed, k])`` with k = 0
(train), 1 (validation), 2 (test), so changing one split's size leaves the others unchanged.

**Adding problem** (``adding``; Hochreiter & Schmidhuber 1997, experiment 4, in the form of
Le et al. 2015 and Arjovsky et al. 2016): inputs have T = ``length`` steps of 2 features. Feature
0 holds values drawn i.i.d. uniform on [0, 1); feature 1 is a marker, 1 at exactly two steps and
0 elsewhere: one step drawn uniformly from the first half ``[0, T // 2)``, the other from the
second half ``[T // 2, T)``. The target, read after the last step, is the sum of the two marked
values (``kind="regression"``, one output, mean squared error). Predicting 1 whatever the
input gives MSE 1/6 (the variance of the sum), the baseline in ``task.info``. (The 1997 original
drew values in [-1, 1] and scaled the target to 0.5 + sum / 4.)

**Copy task** (``copy``; Hochreiter & Schmidhuber 1997, in the form of Arjovsky et al. 2016,
section 4.1): categories 0 = blank, 1..``symbols`` = data, ``symbols + 1`` = delimiter. The input
is ``copy_length`` (K = 10) data symbols drawn uniformly from 1..``symbols`` (8), then
``delay - 1`` blanks, the delimiter, and K blanks: T = ``delay`` + 2K steps, each one-hot over
``symbols + 2`` categories. The target at each step is blank (0) for the first ``delay`` + K
steps and then the K data symbols in order (``kind="sequence-classification"``,
``symbols + 1`` classes, cross-entropy averaged over all T steps). Outputting blanks and then
uniform guesses gives ``K * ln(symbols) / T`` nats per step, the baseline in ``task.info``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import TensorDataset

from stablernn._checks import check_int
from stablernn.tasks.base import SequenceTask

SPLITS = ("train", "validation", "test")


def _generators(seed: int) -> dict[str, np.random.Generator]:
    seed = check_int("task option seed", seed, 0)
    return {split: np.random.default_rng([seed, k]) for k, split in enumerate(SPLITS)}


def adding_samples(count: int, length: int, rng: np.random.Generator):
    """``(inputs (count, length, 2) float32, targets (count, 1) float32)``."""
    values = rng.uniform(0.0, 1.0, size=(count, length))
    first = rng.integers(0, length // 2, size=count)
    second = rng.integers(length // 2, length, size=count)
    markers = np.zeros((count, length))
    rows = np.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    inputs = np.stack([values, markers], axis=-1)
    return (torch.as_tensor(inputs, dtype=torch.float32),
            torch.as_tensor(targets, dtype=torch.float32).unsqueeze(-1))


def copy_samples(count: int, delay: int, symbols: int, copy_length: int,
                 rng: np.random.Generator):
    """``(inputs (count, T, symbols + 2) float32 one-hot, targets (count, T) long)``."""
    steps = delay + 2 * copy_length
    data = rng.integers(1, symbols + 1, size=(count, copy_length))
    codes = np.zeros((count, steps), dtype=np.int64)
    codes[:, :copy_length] = data
    codes[:, copy_length + delay - 1] = symbols + 1
    targets = np.zeros((count, steps), dtype=np.int64)
    targets[:, copy_length + delay:] = data
    inputs = torch.nn.functional.one_hot(torch.as_tensor(codes), symbols + 2).to(torch.float32)
    return inputs, torch.as_tensor(targets)


def adding_task(length: int = 100, train_samples: int = 10000, validation_samples: int = 1000,
                test_samples: int = 1000, seed: int = 0) -> SequenceTask:
    """The adding problem of length ``length`` (see the module docstring)."""
    length = check_int("task option length", length, 2)
    sizes = [check_int(f"task option {split}_samples", n) for split, n in
             zip(SPLITS, (train_samples, validation_samples, test_samples))]
    generators = _generators(seed)
    splits = {split: TensorDataset(*adding_samples(n, length, generators[split]))
              for split, n in zip(SPLITS, sizes)}
    return SequenceTask(
        name="adding", **splits, input_size=2, output_size=1, sequence_length=length,
        kind="regression",
        description=(f"adding problem: sum of the 2 marked values among {length} uniform "
                     f"values, seed {seed}"),
        info={"baseline_loss": 1.0 / 6.0},
    )


def copy_task(delay: int = 100, symbols: int = 8, copy_length: int = 10,
              train_samples: int = 10000, validation_samples: int = 1000,
              test_samples: int = 1000, seed: int = 0) -> SequenceTask:
    """The copy task with ``delay`` steps between the data and its recall (module docstring)."""
    delay = check_int("task option delay", delay, 1)
    symbols = check_int("task option symbols", symbols, 1)
    copy_length = check_int("task option copy_length", copy_length, 1)
    sizes = [check_int(f"task option {split}_samples", n) for split, n in
             zip(SPLITS, (train_samples, validation_samples, test_samples))]
    generators = _generators(seed)
    splits = {split: TensorDataset(*copy_samples(n, delay, symbols, copy_length,
                                                 generators[split]))
              for split, n in zip(SPLITS, sizes)}
    steps = delay + 2 * copy_length
    return SequenceTask(
        name="copy", **splits, input_size=symbols + 2, output_size=symbols + 1,
        sequence_length=steps, kind="sequence-classification",
        description=(f"copy task: recall {copy_length} of {symbols} symbols after a delay of "
                     f"{delay} steps, seed {seed}"),
        info={"baseline_loss": copy_length * math.log(symbols) / steps,
              "blank": 0, "delimiter": symbols + 1},
    )
