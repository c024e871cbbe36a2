"""What a model hands the engine: the constant matrices of one sequence's recurrence, typed.

A cell's ``engine_plan()`` returns one of these plans, or a string saying why the engine does not
run its configuration; :func:`stablernn.engine.run_plan` runs a plan. The engine never looks
inside a model: everything it needs is in the plan (row-vector states ``(B, N)`` throughout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An activation of paper 000 eq. 1: the function, its slope bound g (``0 <= phi' <= g``),
    its derivative as torch's own backward formulas compute it, and its native kernel code."""

    function: object
    slope_bound: float
    derivative: object
    native_code: int


def _tanh_slope(x: torch.Tensor) -> torch.Tensor:
    y = torch.tanh(x)
    return 1 - y * y


def _sigmoid_slope(x: torch.Tensor) -> torch.Tensor:
    y = torch.sigmoid(x)
    return y * (1 - y)


def _softplus_slope(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 20, torch.ones_like(x), torch.sigmoid(x))  # softplus' threshold 20


# The one table of activations: models read the function and slope bound, the engine the rest.
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(torch.relu, 1.0, lambda x: (x > 0).to(x.dtype), 0),
    "tanh": Activation(torch.tanh, 1.0, _tanh_slope, 1),
    "sigmoid": Activation(torch.sigmoid, 0.25, _sigmoid_slope, 2),
    "softplus": Activation(F.softplus, 1.0, _softplus_slope, 3),
}


@dataclass(frozen=True)
class LipschitzPlan:
    """The Lipschitz RNN's step, row form, ``W^T`` as ``recurrent_t``.

    ``method="euler"`` (paper 002, eq. 9, or the exponential step):
    ``h_{t+1} = eps tanh(u_t + h_t W^T) + h_t P`` with ``matrix_t`` the transition ``P``
    (``(I + eps alpha A)^T`` or ``exp(eps alpha A)^T``). ``method="rk2"`` (eq. 10, explicit
    midpoint): ``matrix_t`` is ``alpha A^T``, the slope of the linear part."""

    matrix_t: torch.Tensor
    recurrent_t: torch.Tensor
    step_size: float
    method: str = "euler"

    def __post_init__(self) -> None:
        if self.method not in ("euler", "rk2"):
            raise ValueError(f"method must be 'euler' or 'rk2', got {self.method!r}")


@dataclass(frozen=True)
class NetworkPlan:
    """K same-size rate subnetworks joined by feedback (paper 000, eq. 5 with eq. 1 parts).

    ``method="euler"`` or ``"rk2"``: ``coupling_t`` is ``L^T``; ``"splitting"``: it is the
    feedback's step ``Q^T``. ``blocks_t``: the stacked ``W_k^T``, ``(K, n, n)``; ``activation``: a key of
    :data:`ACTIVATIONS`."""

    method: str
    coupling_t: torch.Tensor
    blocks_t: torch.Tensor
    step_size: float
    activation: str

    def __post_init__(self) -> None:
        if self.method not in ("euler", "rk2", "splitting"):
            raise ValueError(f"method must be 'euler', 'rk2' or 'splitting', got {self.method!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {self.activation!r}")


Plan = Union[LipschitzPlan, NetworkPlan]
