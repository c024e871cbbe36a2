"""Recurrent layers by name, for configs and the command line."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from stablernn.models.baselines import GRU, LSTM, ODERNN, AntisymmetricRNN
from stablernn.models.lipschitz import LipschitzRNN
from stablernn.models.network import SparseComboNet, SVDComboNet


def _combo(model: type) -> Callable[..., nn.Module]:
    """Combo nets take ``hidden_size = num_subnetworks * subnetwork_size``."""

    def build(input_size: int, hidden_size: int, num_subnetworks: int = 16, **options: Any):
        if not isinstance(num_subnetworks, int) or num_subnetworks < 1 or hidden_size % num_subnetworks:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be a multiple of num_subnetworks "
                f"({num_subnetworks!r}): the state is num_subnetworks x subnetwork_size units")
        return model(input_size, num_subnetworks=num_subnetworks,
                     subnetwork_size=hidden_size // num_subnetworks, **options)

    build.__doc__ = model.__doc__
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lipschitz": LipschitzRNN,
    "antisymmetric": AntisymmetricRNN,
    "ode-rnn": ODERNN,
    "lstm": LSTM,
    "gru": GRU,
    "sparse-combo": _combo(SparseComboNet),
    "svd-combo": _combo(SVDComboNet),
}


def build_layer(name: str, input_size: int, hidden_size: int, **options: Any) -> nn.Module:
    """Build the recurrent layer ``name`` (one of :data:`MODELS`) with the given options."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}, got {name!r}")
    try:
        return MODELS[name](input_size, hidden_size, **options)
    except TypeError as error:  # an option the model does not take
        raise ValueError(f"bad option for model {name!r}: {error}") from None
