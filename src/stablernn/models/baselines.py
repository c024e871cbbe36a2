"""Comparison models in the same calling convention: antisymmetric RNN, neural-ODE RNN, LSTM, GRU."""

from __future__ import annotations

import math

import torch
from torch import nn

from stablernn._checks import check_non_negative, check_positive, check_positive_int
from stablernn.models.recurrent import CellLayer, RecurrentCell
from stablernn.parametrizations import SymmetricSkew


class TanhEulerCell(RecurrentCell):
    """Forward Euler of ``h' = tanh(W h + U x + b)``: ``h_{t+1} = h_t + eps tanh(W h_t + U x_t
    + b)``; subclasses say what W is."""

    def __init__(self, input_size: int, hidden_size: int, step_size: float,
                 bias: bool = True) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.step_size = check_positive("step_size", step_size)
        self.input_projection = nn.Linear(input_size, hidden_size, bias=bias)

    @property
    def W(self) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self):
        return self.W.transpose(0, 1)

    def step(self, hidden, projected_input, prepared):
        drive = torch.tanh(torch.addmm(projected_input, hidden, prepared))
        return torch.add(hidden, drive, alpha=self.step_size)


class AntisymmetricCell(TanhEulerCell):
    """Antisymmetric RNN step (Chang et al. 2019, eq. 12 of their paper)::

        h_{t+1} = h_t + eps * tanh((M - M^T - gamma I) h_t + U x_t + b)

    The recurrent matrix is :class:`SymmetricSkew` with ``beta = 1``. ``M ~ N(0, init_std^2 / N)``
    as in Chang et al. (``init_std`` is their sigma_w).
    """

    def __init__(self, input_size: int, hidden_size: int, step_size: float = 0.01,
                 gamma: float = 0.01, init_std: float = 1.0, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, step_size, bias)
        self.gamma = check_non_negative("gamma", gamma)
        # SymmetricSkew draws with std init_std' / N; Chang et al. use std init_std / sqrt(N).
        self.param_w = SymmetricSkew(hidden_size, 1.0, gamma, init_std * math.sqrt(hidden_size))

    @property
    def W(self) -> torch.Tensor:
        return self.param_w()


class ODERNNCell(TanhEulerCell):
    """Neural-ODE RNN step, paper 002 eq. 11 (the Lipschitz unit with alpha = 0)::

        h_{t+1} = h_t + eps * tanh(W h_t + U x_t + b)

    with an unconstrained W initialized like ``torch.nn.RNN`` (uniform in +-1/sqrt(N)).
    """

    def __init__(self, input_size: int, hidden_size: int, step_size: float = 0.03,
                 bias: bool = True) -> None:
        super().__init__(input_size, hidden_size, step_size, bias)
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))

    @property
    def W(self) -> torch.Tensor:
        return self.weight


class AntisymmetricRNN(CellLayer):
    """Antisymmetric RNN layer (Chang et al. 2019): ``AntisymmetricRNN(input_size, hidden_size,
    **cell_options)`` with the options of :class:`AntisymmetricCell`."""

    cell_class = AntisymmetricCell


class ODERNN(CellLayer):
    """Neural-ODE RNN layer, paper 002 eq. 11: ``ODERNN(input_size, hidden_size,
    **cell_options)`` with the options of :class:`ODERNNCell`."""

    cell_class = ODERNNCell


# torch's own recurrent layers already follow the convention; they are used as they are.
LSTM = nn.LSTM
GRU = nn.GRU
