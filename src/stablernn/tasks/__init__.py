"""Data and tasks: every loader returns a :class:`SequenceTask`.

Bundled (no files needed): ``digits``, ``pdigits``, ``mnist5k``, ``pmnist5k``. Generated:
``adding``, ``copy``. From standard files the user provides (``data_dir``; nothing is ever
downloaded): ``smnist``, ``psmnist`` (MNIST IDX), ``scifar10``, ``noise-cifar10`` (CIFAR-10
python batches), ``ptb-char``, ``ptb-word`` (PTB-style text), ``timit`` (WAV). See
:mod:`stablernn.tasks.registry` for the options and :mod:`stablernn.tasks.base` for how a
training loop reads any split (:func:`get_batch`).
"""

from stablernn.tasks.base import (
    KINDS,
    Batch,
    BatchDataset,
    SequenceTask,
    get_batch,
    iterate_batches,
    take,
)
from stablernn.tasks.bundled import digits_task, fixed_permutation, mnist5k_task
from stablernn.tasks.files import DataFormatError, MissingDataError
from stablernn.tasks.objectives import correct, loss_sum, mean_loss
from stablernn.tasks.registry import TASKS, check_task_options, load_task, task_options
from stablernn.tasks.text import bits_per_character, perplexity

__all__ = [
    "KINDS", "TASKS", "Batch", "BatchDataset", "DataFormatError", "MissingDataError",
    "SequenceTask", "bits_per_character", "check_task_options", "correct", "digits_task",
    "fixed_permutation", "get_batch", "iterate_batches", "load_task", "loss_sum", "mean_loss",
    "mnist5k_task", "perplexity", "take", "task_options",
]
