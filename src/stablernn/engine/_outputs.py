"""What the engine's whole-sequence autograd Functions share: the ``(states, last)`` outputs,
the loop that fills the states, the backward's guard and the choice of path.

Each Function returns the states ``(T, B, N)`` and the last state ``(B, N)`` as a separate tensor,
like ``torch.nn.RNN``'s ``(output, h_n)``. Gradients are not materialized: a loss on ``last``
alone reaches the backward as ``grad_states = None``, so no dense ``(T, B, N)`` zero gradient is
built (autograd's backward of ``states[-1]`` would build one; its cost is in
docs/performance.md).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from stablernn.engine import native


def empty_like(like: torch.Tensor) -> torch.Tensor:
    """An empty tensor of ``like``'s dtype and device: the kernels' "none"."""
    return like.new_empty(0)


def dense_or_empty(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A contiguous gradient, or an empty tensor for ``None`` (the kernels then skip it)."""
    return empty_like(like) if grad is None else grad.contiguous()


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


def sequence_backward(backward: Callable) -> staticmethod:
    """The ``backward`` of a whole-sequence Function (once differentiable): nothing flows back
    when neither ``states`` nor ``last`` has a gradient; otherwise ``backward(ctx, grad_states,
    grad_last)`` with either possibly ``None``."""

    @once_differentiable
    def run(ctx, grad_states, grad_last):
        if grad_states is None and grad_last is None:
            return (None,) * len(ctx.needs_input_grad)
        return backward(ctx, grad_states, grad_last)

    run.__doc__ = backward.__doc__
    return staticmethod(run)


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


def run_sequence(inputs: torch.Tensor, start: torch.Tensor, matrices: Sequence[torch.Tensor],
                 input_weight: torch.Tensor | None, input_bias: torch.Tensor | None,
                 backend: str | None, native_function: Any, native_forward: str,
                 python_function: Any, python_forward: Callable, extra: tuple = (),
                 kernel_extra: tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states, last)`` of one recurrence on the chosen path (``backend``: ``"native"``,
    ``"python"``, or ``None`` to pick by :func:`native.backend_for`).

    Native: ``native_function.apply(inputs, weight, bias, start, *matrices, *extra)`` when a
    gradient is needed, else the kernel ``native_forward(..., *kernel_extra, False)`` without
    storing what backward needs; Python: the input layer (if any) applied first, then
    ``python_function.apply(inputs, start, *matrices, *extra)`` or, without gradients,
    ``python_forward(inputs, start, *matrices, *extra)``."""
    inputs, start = inputs.contiguous(), start.contiguous()
    matrices = [matrix.contiguous() for matrix in matrices]
    tensors = [inputs, start, *matrices]
    layer = [t.contiguous() for t in (input_weight, input_bias) if t is not None]
    backend = backend or native.backend_for(*tensors, *layer)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors + layer)
    if backend == "native":
        weight = None if input_weight is None else input_weight.contiguous()
        bias = None if input_bias is None else input_bias.contiguous()
        if needs_grad:
            return native_function.apply(inputs, weight, bias, start, *matrices, *extra)
        kernel = getattr(native.load(), native_forward)
        states = kernel(inputs, empty_like(start) if weight is None else weight,
                        empty_like(start) if bias is None else bias, start, *matrices,
                        *kernel_extra, False)[0]
        return states, states[-1]
    if input_weight is not None:
        inputs = F.linear(inputs, input_weight, input_bias)
    if needs_grad:
        return python_function.apply(inputs, start, *matrices, *extra)
    with torch.no_grad():
        states = python_forward(inputs, start, *matrices, *extra)
    return states, states[-1]
