"""The Lipschitz recurrent unit of paper 002."""

from __future__ import annotations

import math

import torch
from torch import nn

from stablernn._checks import (
    check_choice,
    check_in_range,
    check_non_negative,
    check_positive,
    check_positive_int,
)
from stablernn.engine import LipschitzPlan
from stablernn.models.recurrent import CellLayer, RecurrentCell, cell_attribute
from stablernn.parametrizations import NormBounded, SymmetricSkew, matrix_exp

LIPSCHITZ_METHODS = ("euler", "rk2", "exponential")
PARAMETRIZATIONS = ("contracting", "paper")
# What a cell gets for the options left out, by parametrization: "contracting" (the default) is
# certified as it runs; "paper" is paper 002 as published (table 8 values, forward Euler).
PARAMETRIZATION_DEFAULTS: dict[str, dict[str, float | str]] = {
    "contracting": {"step_size": 0.3, "method": "exponential", "gamma_a": 0.03,
                    "nonlinear_share": 0.9},
    "paper": {"step_size": 0.03, "method": "euler", "gamma_a": 0.001},
}


class LipschitzDynamics(nn.Module):
    r"""The continuous-time Lipschitz unit ``h' = alpha A h + tanh(W h + u)`` (paper 002, eq. 1
    with eq. 12's ``alpha``), shared by :class:`LipschitzCell` and the network part
    :class:`stablernn.models.subnetworks.LipschitzPart`. A and W come from the
    parametrizations ``param_a`` and ``param_w`` (eqs. 2a, 2b, 6) that subclasses set."""

    param_a: nn.Module
    param_w: nn.Module
    alpha: float

    @property
    def A(self) -> torch.Tensor:
        """The linear hidden-to-hidden matrix ``A_{beta_a, gamma_a}`` (eq. 2a), column
        convention."""
        return self.param_a()

    @property
    def W(self) -> torch.Tensor:
        """The hidden-to-hidden matrix inside tanh, ``W_{beta_w, gamma_w}`` (eq. 2b)."""
        return self.param_w()

    def slopes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha A^T, W^T)``: the matrices of the vector field for row-vector states."""
        return self.alpha * self.A.transpose(0, 1), self.W.transpose(0, 1)

    @staticmethod
    def vector_field(hidden: torch.Tensor, projected_input: torch.Tensor,
                     slopes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``alpha A h + tanh(W h + u)`` for row-vector states ``(B, N)`` (eq. 1)."""
        linear_t, recurrent_t = slopes
        drive = torch.tanh(torch.addmm(projected_input, hidden, recurrent_t))
        return torch.addmm(drive, hidden, linear_t)


class LipschitzCell(LipschitzDynamics, RecurrentCell):
    r"""One step of the Lipschitz RNN, paper 002 eqs. 1, 9, 10 and 12.

    Continuous time (eq. 1, with the ablation scale ``alpha`` of eq. 12)::

        h' = alpha A h + tanh(W h + U x + b)

    with ``A = A_{beta_a, gamma_a}`` and ``W = A_{beta_w, gamma_w}`` built from free matrices by
    the symmetric-skew decomposition (eqs. 2a, 2b, 6; :class:`SymmetricSkew`).

    Discretization with step ``step_size`` (the paper's epsilon):

    - ``"euler"`` (eq. 9): ``h_{t+1} = h_t + eps (alpha A h_t + tanh(W h_t + U x_t + b))``.
    - ``"rk2"`` (eq. 10, explicit midpoint): ``h~ = h_t + eps/2 f(h_t)``,
      ``h_{t+1} = h_t + eps f(h~)`` with ``f(h) = alpha A h + tanh(W h + U x_t + b)``; the input
      ``x_t`` is held constant over the step (zero-order hold).
    - ``"exponential"``: the linear part exactly, the nonlinear term by Euler,
      ``h_{t+1} = exp(eps alpha A) h_t + eps tanh(W h_t + U x_t + b)`` (first order, like eq. 9;
      ``exp(eps alpha A) = I + eps alpha A + O(eps^2)``). Forward Euler never preserves
      contraction of a skew part (``||I + eps S|| > 1``); the exponential does
      (``||exp(eps S)|| = 1``).

    Parametrizations:

    - ``"contracting"`` (default): certified as it runs for every parameter value (with
      ``method="exponential"``, its default). ``A = (M - M^T) - gamma_a I`` (eq. 6 with
      ``beta_a = 1``: skew minus damping, ``gamma_a > 0``), so ``||exp(eps alpha A)||_2 = exp(-eps alpha
      gamma_a)``; ``W = w_max V / max(1, ||V||_2)`` with V by eq. 6 (``beta_w``, ``gamma_w``)
      and ``w_max = share (1 - exp(-eps alpha gamma_a)) / eps`` (``share =
      nonlinear_share`` in (0, 1)). Every one-step Jacobian ``exp(eps alpha A) + eps D W``
      (``0 <= D <= I``) then has
      ``||J||_2 <= exp(-eps alpha gamma_a) + share (1 - exp(-eps alpha gamma_a)) < 1``.
    - ``"paper"``: A and W by eq. 6 with ``beta_a`` (0.75 unless given), ``gamma_a``,
      ``beta_w``, ``gamma_w``. Nothing guarantees contraction; :func:`stablernn.certify` checks.

    ``step_size``, ``method``, ``gamma_a`` and ``nonlinear_share`` left out (``None``) take the
    parametrization's defaults (:data:`PARAMETRIZATION_DEFAULTS`): contracting, step 0.3,
    exponential, ``gamma_a`` 0.03, share 0.9; paper, step 0.03, Euler, ``gamma_a`` 0.001.

    Convention: column vectors, ``A h`` as the paper writes it. :attr:`A` and :attr:`W` return the
    matrices in that convention. (The official code multiplies row vectors ``h @ A``, i.e. it
    applies ``A^T``: same symmetric part, skew part flipped.)

    Initialization (paper 002, table 8): free matrices ~ N(0, (init_std / N)^2), so A and W start
    near ``-gamma I``; ``U`` and ``b`` use ``torch.nn.Linear``'s default, as the official code.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        beta_a: float | None = None,
        gamma_a: float | None = None,
        beta_w: float = 0.75,
        gamma_w: float = 0.001,
        step_size: float | None = None,
        method: str | None = None,
        alpha: float = 1.0,
        init_std: float = 0.1,
        bias: bool = True,
        parametrization: str = "contracting",
        nonlinear_share: float | None = None,
    ) -> None:
        super().__init__()
        parametrization = check_choice("parametrization", parametrization, PARAMETRIZATIONS)
        defaults = PARAMETRIZATION_DEFAULTS[parametrization]
        step_size = defaults["step_size"] if step_size is None else step_size
        method = defaults["method"] if method is None else method
        gamma_a = defaults["gamma_a"] if gamma_a is None else gamma_a
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.step_size = check_positive("step_size", step_size)
        self.method = check_choice("method", method, LIPSCHITZ_METHODS)
        self.alpha = check_non_negative("alpha", alpha)
        self.parametrization = parametrization
        self.param_a = SymmetricSkew(hidden_size, 0.75 if beta_a is None else beta_a, gamma_a,
                                     init_std)
        self.param_w = SymmetricSkew(hidden_size, beta_w, gamma_w, init_std)
        if self.parametrization == "contracting":
            if beta_a not in (None, 1, 1.0):
                raise ValueError(f"beta_a must be 1 (A = skew - gamma_a I) for "
                                 f"parametrization='contracting', got {beta_a!r}")
            if not gamma_a > 0 or not self.alpha > 0:
                raise ValueError("parametrization='contracting' needs gamma_a > 0 and alpha > 0 "
                                 f"(the damping that makes every step contract), got gamma_a="
                                 f"{gamma_a!r}, alpha={alpha!r}")
            self.param_a = SymmetricSkew(hidden_size, 1.0, gamma_a, init_std)
            if nonlinear_share is None:
                nonlinear_share = defaults["nonlinear_share"]
            share = check_in_range("nonlinear_share", nonlinear_share, 0.0, 1.0)
            if not 0 < share < 1:
                raise ValueError(f"nonlinear_share must be in (0, 1), got {nonlinear_share!r}")
            damping = math.exp(-self.step_size * self.alpha * gamma_a)
            self.param_w = NormBounded(self.param_w, share * (1.0 - damping) / self.step_size)
        elif nonlinear_share is not None:
            # Only the contracting parametrization bounds ||W||; the paper's would ignore it.
            raise ValueError("nonlinear_share applies to parametrization='contracting' only (it "
                             f"bounds ||W||), got nonlinear_share={nonlinear_share!r} with "
                             "parametrization='paper'")
        self.input_projection = nn.Linear(input_size, hidden_size, bias=bias)

    @property
    def guaranteed_step_factor(self) -> float | None:
        """The factor every parameter value gives (``"contracting"`` with ``"exponential"``)."""
        if self.parametrization != "contracting" or self.method != "exponential":
            return None
        damping = math.exp(-self.step_size * self.alpha * self.param_a.gamma)
        return damping + self.step_size * self.param_w.max_norm

    def transition(self) -> torch.Tensor:
        """The constant T of one step ``h_{t+1} = T h_t + eps tanh(...)`` (column convention):
        ``I + eps alpha A`` (Euler) or ``exp(eps alpha A)`` (exponential); RK2 has none."""
        if self.method == "rk2":
            raise ValueError("the RK2 step has no constant transition matrix")
        return self.prepare()[0].transpose(0, 1)

    def prepare(self):
        # Row-vector states (B, N): ``A h`` becomes ``h @ A^T``. Built once per forward pass.
        linear_t, recurrent_t = self.slopes()
        if self.method == "exponential":
            return matrix_exp(self.step_size * linear_t), recurrent_t
        if self.method == "euler":
            # Fold the constant: h + eps*alpha*A h = h @ (I + eps*alpha*A)^T.
            identity = torch.eye(self.hidden_size, dtype=linear_t.dtype, device=linear_t.device)
            return identity + self.step_size * linear_t, recurrent_t
        return linear_t, recurrent_t

    def engine_plan(self) -> LipschitzPlan:
        matrix_t, recurrent_t = self.prepare()
        return LipschitzPlan(matrix_t, recurrent_t, self.step_size,
                             "rk2" if self.method == "rk2" else "euler")

    def step(self, hidden, projected_input, prepared):
        if self.method != "rk2":
            transition_t, recurrent_t = prepared
            drive = torch.tanh(torch.addmm(projected_input, hidden, recurrent_t))
            return torch.addmm(drive, hidden, transition_t, beta=self.step_size)
        midpoint = hidden + 0.5 * self.step_size * self.vector_field(hidden, projected_input,
                                                                     prepared)
        return hidden + self.step_size * self.vector_field(midpoint, projected_input, prepared)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, step_size={self.step_size}, "
            f"method={self.method!r}, alpha={self.alpha}, "
            f"parametrization={self.parametrization!r}"
        )


class LipschitzRNN(CellLayer):
    """A Lipschitz RNN layer (paper 002) with the ``torch.nn.RNN`` calling convention, built
    from its cell: ``LipschitzRNN(input_size, hidden_size, **cell_options)`` takes every option
    of :class:`LipschitzCell` (``step_size``, ``method``, ``beta_a``, ...) plus the layer's
    ``batch_first``, ``check_finite`` and ``engine``; ``forward(input, h0=None) -> (output,
    h_n)``. ``A``, ``W`` and the step settings read through to the cell.

    ``LipschitzRNN(1, 128)`` (the contracting parametrization with the exponential step) is
    certified as it runs for every parameter value; ``parametrization="paper"`` is paper 002 as
    published (forward Euler), which :func:`stablernn.certify` checks and may refuse.
    ``engine="auto"`` (default) runs every method on the recurrence engine (one torch operator per sequence, with
    hand-written BPTT; :mod:`stablernn.engine`); ``engine="loop"`` runs the plain autograd loop.
    """

    cell_class = LipschitzCell
    A = cell_attribute("A")
    W = cell_attribute("W")
    step_size = cell_attribute("step_size")
    method = cell_attribute("method")
    alpha = cell_attribute("alpha")
    parametrization = cell_attribute("parametrization")

    def transition(self) -> torch.Tensor:
        return self.cell.transition()
