"""The ``(states, last)`` outputs shared by the engine's autograd Functions.

Each Function returns the states ``(T, B, N)`` and the last state ``(B, N)`` as a separate tensor,
like ``torch.nn.RNN``'s ``(output, h_n)``. Gradients are not materialized: a loss on ``last``
alone reaches the backward as ``grad_states = None``, so no dense ``(T, B, N)`` zero gradient is
built (autograd's backward of ``states[-1]`` would build one; its cost is in
docs/performance.md).
"""

from __future__ import annotations

import torch


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
