"""Tasks by name, for configs and the command line.

=================  ==========================================================================
name               options (defaults)
=================  ==========================================================================
digits, pdigits    split_seed (1234), permutation_seed (12008), pixels_per_step (1),
                   validation_from ("start")
mnist5k, pmnist5k  split_seed (1234), permutation_seed (12008), pixels_per_step (1),
                   validation_from ("start")
smnist, psmnist    data_dir, validation (2000), split_seed (1234), permutation_seed (12008),
                   validation_from ("start"), pixels_per_step (1)
scifar10           data_dir, validation (5000), split_seed (1234), validation_from ("start"),
                   augment (False)
noise-cifar10      data_dir, length (1000), noise_std (1.0), noise_seed (0), validation (5000),
                   split_seed (1234), validation_from ("start")
adding             length (100), train_samples (10000), validation_samples (1000),
                   test_samples (1000), seed (0)
copy               delay (100), symbols (8), copy_length (10), train_samples (10000),
                   validation_samples (1000), test_samples (1000), seed (0)
ptb-char           data_dir, sequence_length (150), char_tokens ("auto"), max_vocabulary (None),
                   carry_state (False), eval_streams (10)
ptb-word           data_dir, sequence_length (300), max_vocabulary (None), carry_state (False),
                   eval_streams (10)
timit              data_dir, exclude_sa (True), sample_rate (8000), window (256), hop (128),
                   log_floor (1e-5)
=================  ==========================================================================

The options that select the reference code's protocols (defaults keep the earlier behaviour,
so existing runs resume identically; ``docs/tasks.md`` compares each task with its paper):
``validation_from = "end"`` holds out the last samples of the shuffle (the official Lipschitz
RNN split) instead of the first; ``augment = true`` randomly crops and flips sCIFAR training
images; ``carry_state = true`` carries the hidden state across consecutive windows of
parallel token streams (truncated backpropagation through time).

``data_dir`` (``--data-dir``) falls back to the environment variable ``STABLERNN_DATA_DIR``.
:func:`task_options` lists a task's options with their defaults, so a config can be checked
before anything is loaded; :func:`load_task` refuses unknown options.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from functools import partial
from typing import Any

from stablernn.tasks.audio import timit_task
from stablernn.tasks.base import SequenceTask
from stablernn.tasks.bundled import digits_task, mnist5k_task
from stablernn.tasks.cifar import noise_cifar10_task, scifar10_task
from stablernn.tasks.memory import adding_task, copy_task
from stablernn.tasks.mnist import mnist_task
from stablernn.tasks.text import language_model_task

TASKS: dict[str, Callable[..., SequenceTask]] = {
    "digits": partial(digits_task, permuted=False),
    "pdigits": partial(digits_task, permuted=True),
    "mnist5k": partial(mnist5k_task, permuted=False),
    "pmnist5k": partial(mnist5k_task, permuted=True),
    "smnist": partial(mnist_task, permuted=False),
    "psmnist": partial(mnist_task, permuted=True),
    "scifar10": scifar10_task,
    "noise-cifar10": noise_cifar10_task,
    "adding": adding_task,
    "copy": copy_task,
    "ptb-char": partial(language_model_task, level="char"),
    "ptb-word": partial(language_model_task, level="word"),
    "timit": timit_task,
}

# options fixed by the task's name, not settable
_FIXED = {"permuted", "level"}
# options that only make sense at one level
_EXCLUDED = {"ptb-word": {"char_tokens"}}


def _check_name(name: str) -> None:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(sorted(TASKS))}, got {name!r}")


def task_options(name: str) -> dict[str, Any]:
    """The options task ``name`` accepts, with their defaults."""
    _check_name(name)
    parameters = inspect.signature(TASKS[name]).parameters
    return {key: parameter.default for key, parameter in parameters.items()
            if key not in _FIXED and key not in _EXCLUDED.get(name, ())}


def check_task_options(name: str, options: dict[str, Any]) -> None:
    """A ValueError naming any option that task ``name`` does not accept."""
    allowed = task_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"task {name!r} has no option(s) {', '.join(unknown)}; its options are "
            f"{', '.join(allowed) or '(none)'}")
    for key, value in options.items():
        _check_option_type(name, key, value, allowed[key])


def _check_option_type(task: str, key: str, value: Any, default: Any) -> None:
    """The type an option's default has (``None`` defaults: a path for ``data_dir``, else an
    integer): checked before anything is loaded, so a config typo fails with its name."""
    if key == "data_dir":
        ok, expected = value is None or isinstance(value, (str, os.PathLike)), "a directory path"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int) or default is None:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            default is None and value is None)
        expected = "an integer" + (" or null" if default is None else "")
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        expected = "a finite number"
    else:
        ok, expected = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ValueError(f"task option {key} must be {expected}, got {value!r} (task {task!r})")


def load_task(name: str, **options: Any) -> SequenceTask:
    """Load the task ``name`` (one of :data:`TASKS`) with its ``options``."""
    check_task_options(name, options)
    return TASKS[name](**options)
