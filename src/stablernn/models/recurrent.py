"""Cell and layer base classes: one step of the recurrence, and a sequence with the
``torch.nn.RNN`` calling convention.

A cell says how to step (``step``); the layer runs the sequence. Whatever a step needs that does
not change over time (structured matrices, folded constants) is built once per forward pass by
``cell.prepare()``, and the input projection ``U x_t + b`` is computed for all time steps in one
matmul before the loop (``cell.project_input``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stablernn._checks import check_choice, check_finite
from stablernn.engine import ENGINES, Plan, run_cell


def _check_input(input: torch.Tensor, input_size: int, dims: tuple[int, ...],
                 expected: str) -> None:
    if input.dim() not in dims:
        raise ValueError(f"input must be {expected}, got shape {tuple(input.shape)}")
    if input.shape[-1] != input_size:
        raise ValueError(
            f"input has feature size {input.shape[-1]}, expected input_size={input_size}")


class RecurrentCell(nn.Module):
    """One time step ``h_{t+1} = F(h_t, x_t)``. Subclasses implement ``prepare`` and ``step``.

    ``forward(input, hx=None)`` follows ``torch.nn.RNNCell``: input ``(B, F)`` or unbatched
    ``(F,)``, ``hx`` ``(B, N)`` or ``(N,)``, returns the next state. It lets a user run the model
    online, one sample at a time.
    """

    input_size: int
    hidden_size: int
    input_projection: nn.Linear

    def prepare(self) -> Any:
        """Everything the step needs that is constant over time (built once per sequence)."""
        raise NotImplementedError

    def step(self, hidden: torch.Tensor, projected_input: torch.Tensor, prepared: Any) -> torch.Tensor:
        """Advance ``hidden`` (B, N) by one step, given ``U x_t + b`` (B, N)."""
        raise NotImplementedError

    def project_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """``U x + b`` for any leading shape, as one matmul."""
        return self.input_projection(inputs)

    def engine_plan(self) -> Plan | str:
        """What the recurrence engine runs for this cell (:mod:`stablernn.engine.plans`), or
        why it runs none (the layer then runs its loop)."""
        return f"no engine path for {type(self).__name__}"

    def fused_input_layer(self) -> nn.Linear | None:
        """The input layer, when it is a plain ``nn.Linear`` applied by this base
        ``project_input`` (the native kernels may then apply it inside the loop)."""
        plain = type(self).project_input is RecurrentCell.project_input
        return self.input_projection if plain and type(self.input_projection) is nn.Linear \
            else None

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        _check_input(input, self.input_size, (1, 2),
                     f"shape (batch, {self.input_size}) or ({self.input_size},)")
        unbatched = input.dim() == 1
        batch = input.reshape(1, -1) if unbatched else input
        expected = (self.hidden_size,) if unbatched else (batch.shape[0], self.hidden_size)
        if hx is None:
            hx = batch.new_zeros(batch.shape[0], self.hidden_size)
        else:
            if tuple(hx.shape) != expected:
                raise ValueError(f"hx must have shape {expected}, got {tuple(hx.shape)}")
            hx = hx.reshape(batch.shape[0], self.hidden_size)
        hidden = self.step(hx, self.project_input(batch), self.prepare())
        return hidden.reshape(self.hidden_size) if unbatched else hidden


class RecurrentLayer(nn.Module):
    """Runs a cell over a sequence with the ``torch.nn.RNN`` calling convention (one layer).

    ``forward(input, h0=None) -> (output, h_n)``:

    - input ``(T, B, F)``, or ``(B, T, F)`` with ``batch_first=True``, or unbatched ``(T, F)``;
    - ``h0`` ``(1, B, N)`` (``(1, N)`` unbatched), zeros when omitted;
    - ``output`` holds the state at every step, ``(T, B, N)`` / ``(B, T, N)`` / ``(T, N)``;
    - ``h_n`` the last state, shaped like ``h0``.

    The hidden state is the full state vector of the system. Inputs containing NaN or Inf raise
    a ``ValueError`` unless ``check_finite=False``.

    ``engine``: ``"auto"`` runs the sequence on the recurrence engine (:mod:`stablernn.engine`)
    with the cell's :meth:`~RecurrentCell.engine_plan` where it has one, else the plain loop of
    :meth:`run`; ``"loop"`` always runs the loop. Both compute the same states and gradients
    (to rounding).
    """

    def __init__(self, cell: RecurrentCell, batch_first: bool = False, check_finite: bool = True,
                 engine: str = "auto"):
        super().__init__()
        self.cell = cell
        self.batch_first = bool(batch_first)
        self.check_finite = bool(check_finite)
        self.engine = check_choice("engine", engine, ENGINES)

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def _time_major(self, input: torch.Tensor) -> tuple[torch.Tensor, bool]:
        layout = "(batch, seq, feature)" if self.batch_first else "(seq, batch, feature)"
        _check_input(input, self.input_size, (2, 3),
                     f"3-D {layout} or 2-D unbatched (seq, feature)")
        time_dim = 1 if (input.dim() == 3 and self.batch_first) else 0
        if input.shape[time_dim] == 0:
            raise ValueError(f"input has no time steps, got shape {tuple(input.shape)}")
        if self.check_finite:
            check_finite("input", input)
        if input.dim() == 2:
            return input.unsqueeze(1), True
        return (input.transpose(0, 1) if self.batch_first else input), False

    def _initial_state(self, h0: torch.Tensor | None, like: torch.Tensor, unbatched: bool):
        batch = like.shape[1]
        if h0 is None:
            return like.new_zeros(batch, self.hidden_size)
        expected = (1, self.hidden_size) if unbatched else (1, batch, self.hidden_size)
        if tuple(h0.shape) != expected:
            raise ValueError(f"h0 must have shape {expected}, got {tuple(h0.shape)}")
        if self.check_finite:
            check_finite("h0", h0)
        return h0.reshape(batch, self.hidden_size).to(like.dtype)

    def forward(self, input: torch.Tensor, h0: torch.Tensor | None = None):
        inputs, unbatched = self._time_major(input)
        hidden = self._initial_state(h0, inputs, unbatched)
        states, last = self.run(inputs, hidden)
        if unbatched:
            return states.squeeze(1), last.reshape(1, self.hidden_size)
        output = states.transpose(0, 1) if self.batch_first else states
        return output, last.unsqueeze(0)

    def run(self, inputs: torch.Tensor,
            hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Time-major core: inputs ``(T, B, F)``, state ``(B, N)`` -> ``(states, last)``: states
        ``(T, B, N)`` and the last state ``(B, N)`` as its own tensor, so that a loss on the last
        state alone does not make autograd build a dense ``(T, B, N)`` gradient."""
        if self.engine == "auto":
            result = run_cell(self.cell, inputs, hidden, type(self).__name__)
            if result is not None:
                return result
        cell = self.cell
        prepared = cell.prepare()
        projected = cell.project_input(inputs)
        states = []
        # unbind, not projected[t]: indexing a tensor that needs grad makes backward O(T^2).
        for projected_t in projected.unbind(0):
            hidden = cell.step(hidden, projected_t, prepared)
            states.append(hidden)
        return torch.stack(states), hidden

    def extra_repr(self) -> str:
        return f"batch_first={self.batch_first}"


class CellLayer(RecurrentLayer):
    """A layer built from its cell class, as ``torch.nn.RNN`` is from its cell:
    ``Layer(input_size, hidden_size, **cell_options)`` passes every option but the layer's own
    (``batch_first``, ``check_finite``, ``engine``) to ``cell_class``."""

    cell_class: type[RecurrentCell]

    def __init__(self, input_size: int, hidden_size: int, *, batch_first: bool = False,
                 check_finite: bool = True, engine: str = "auto", **cell_options: Any) -> None:
        super().__init__(self.cell_class(input_size, hidden_size, **cell_options),
                         batch_first=batch_first, check_finite=check_finite, engine=engine)


def cell_attribute(name: str) -> property:
    """A read-only layer attribute that is its cell's (``layer.step_size`` is
    ``layer.cell.step_size``)."""
    return property(lambda layer: getattr(layer.cell, name),
                    doc=f"The cell's ``{name}`` (read-only).")
