"""Tasks by name, for configs and the command line."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from stablernn.tasks.base import SequenceTask
from stablernn.tasks.bundled import digits_task, mnist5k_task

TASKS: dict[str, Callable[..., SequenceTask]] = {
    "digits": partial(digits_task, permuted=False),
    "pdigits": partial(digits_task, permuted=True),
    "mnist5k": partial(mnist5k_task, permuted=False),
    "pmnist5k": partial(mnist5k_task, permuted=True),
}


def load_task(name: str, **options: Any) -> SequenceTask:
    """Load the task ``name`` (one of :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(sorted(TASKS))}, got {name!r}")
    return TASKS[name](**options)
