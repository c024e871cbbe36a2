"""Data and tasks: every loader returns a :class:`SequenceTask`."""

from stablernn.tasks.base import SequenceTask
from stablernn.tasks.bundled import digits_task, fixed_permutation, mnist5k_task
from stablernn.tasks.registry import TASKS, load_task

__all__ = ["TASKS", "SequenceTask", "digits_task", "fixed_permutation", "load_task", "mnist5k_task"]
