"""What the engine's recurrences share: the ``(states, last)`` outputs and the loop that fills
the states.

Each recurrence returns the states ``(T, B, N)`` and the last state ``(B, N)`` as a separate
tensor, like ``torch.nn.RNN``'s ``(output, h_n)``. Gradients are not materialized: a loss on
``last`` alone reaches the backward as ``grad_states = None``, so no dense ``(T, B, N)`` zero
gradient is built (autograd's backward of ``states[-1]`` would build one; its cost is in
docs/performance.md).
"""

from __future__ import annotations

from typing import Callable

import torch


def standard_strides(grad: torch.Tensor | None) -> torch.Tensor | None:
    """A parameter's gradient with row-major strides even in size-1 dimensions (a transposed
    ``(N, 1)`` result has strides ``(1, N)``: the same memory, but DDP's gradient buckets warn
    on it)."""
    if grad is None or grad.stride() == torch.empty(grad.shape, device="meta").stride():
        return grad
    return grad.clone(memory_format=torch.contiguous_format)


def last_state_gradient(out: torch.Tensor, grad_states: torch.Tensor | None,
                        grad_last: torch.Tensor | None) -> torch.Tensor:
    """``out`` <- the whole gradient of the last state: its row of the per-step gradients plus
    the gradient of the separate ``last`` output (either may be ``None``)."""
    if grad_states is None:
        out.zero_()
    else:
        out.copy_(grad_states[-1])
    if grad_last is not None:
        out.add_(grad_last)
    return out


def unroll(inputs: torch.Tensor, start: torch.Tensor,
           step_into: Callable[[int, torch.Tensor, torch.Tensor], None]) -> torch.Tensor:
    """The states ``(T, B, N)`` of a recurrence written into one preallocated tensor:
    ``step_into(t, state, out)`` writes the state after step t into ``out`` from ``state``."""
    states = torch.empty_like(inputs)
    state = start
    for t in range(inputs.shape[0]):
        step_into(t, state, states[t])
        state = states[t]
    return states
