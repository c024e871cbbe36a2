"""The model a config describes, rebuilt the same way by training, evaluation and certificates.

No data is needed to build a model: :class:`TaskSignature` holds what the model needs to know of
its task, and checkpoints store it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stablernn.experiments.config import TrainConfig
from stablernn.models.readouts import PerStepReadout, SequenceClassifier
from stablernn.models.registry import build_layer
from stablernn.tasks import SequenceTask


@dataclass(frozen=True)
class TaskSignature:
    """What a model needs to know of its task (saved in checkpoints, so a model can be rebuilt
    without loading the data)."""

    input_size: int
    output_size: int
    kind: str
    per_step: bool

    @classmethod
    def of(cls, task: SequenceTask) -> TaskSignature:
        return cls(task.input_size, task.output_size, task.kind, task.per_step)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here")
    return torch.device(name)


def build_model(config: TrainConfig, task: SequenceTask | TaskSignature) -> nn.Module:
    """The model a config describes for a task: (embedding), recurrent layer, readout.

    Classification and regression read the last state (:class:`SequenceClassifier`); per-step
    kinds read every state (:class:`PerStepReadout`); language models embed token ids first.
    """
    language_model = task.kind == "language-model"
    input_size = config.embedding_size if language_model else task.input_size
    layer = build_layer(config.model, input_size, config.hidden_size, batch_first=True,
                        **config.model_options)
    head = (PerStepReadout(layer, task.output_size) if task.per_step
            else SequenceClassifier(layer, task.output_size))
    if language_model:
        return nn.Sequential(nn.Embedding(task.input_size, config.embedding_size), head)
    return head


def recurrent_layer(model: nn.Module) -> nn.Module:
    """The recurrent layer inside a model built by :func:`build_model`."""
    head = model[-1] if isinstance(model, nn.Sequential) else model
    return head.rnn


