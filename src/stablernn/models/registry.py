"""Recurrent layers by name, for configs and the command line."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from stablernn.models.baselines import GRU, LSTM, ODERNN, AntisymmetricRNN
from stablernn.models.lipschitz import LipschitzRNN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lipschitz": LipschitzRNN,
    "antisymmetric": AntisymmetricRNN,
    "ode-rnn": ODERNN,
    "lstm": LSTM,
    "gru": GRU,
}


def build_layer(name: str, input_size: int, hidden_size: int, **options: Any) -> nn.Module:
    """Build the recurrent layer ``name`` (one of :data:`MODELS`) with the given options."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    try:
        return MODELS[name](input_size, hidden_size, **options)
    except TypeError as error:  # an option the model does not take
        raise ValueError(f"bad option for model {name!r}: {error}") from None
