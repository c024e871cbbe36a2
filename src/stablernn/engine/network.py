"""Networks of rate subnetworks with feedback: the Euler recurrence of a whole sequence.

Paper 000, eq. 5 with eq. 1 parts and tau = 1, K same-size blocks of n units (N = K n), in row
form (states ``(B, N)``)::

    x' = -x + blockdiag(W_k) phi(x) + L x + u
    x_{t+1} = x_t + dt x' = x_t P + dt (blocks(phi(x_t)) + u_t),   P = (1 - dt) I + dt L^T

with ``blocks(y)_k = y_k W_k^T``: a batched product over the blocks, never a dense
block-diagonal matrix. The inputs are what ``AssemblyCell.prepare()`` builds: ``L^T``
(``feedback_t``) and the stacked ``W_k^T`` (``(K, n, n)``), so autograd differentiates the
feedback parameterization (B, the metric) and trained subnetworks (SVD parts, ...) upstream.

Backward (BPTT): with ``gu_t = dt g_t``,
``g_{t-1} = G_{t-1} + g_t P^T + phi'(x_{t-1}) * blocks^T(gu_t)``; after the loop
``dL^T = X_prev^T GU`` and ``d(W_k^T) = phi(X_prev)_k^T GU_k`` (only when the blocks need a
gradient), ``du = GU``.

Memory: the forward stores the states (its output), plus ``phi(X_prev)`` when the blocks are
trained; the backward adds ``GU`` (O(T B N) each).
"""

from __future__ import annotations

import torch

from stablernn.engine import native
from stablernn.engine._outputs import (
    dense_or_empty,
    empty_like,
    last_state_gradient,
    run_sequence,
    sequence_backward,
    standard_strides,
    unroll,
)
from stablernn.engine.plans import ACTIVATIONS


def _phi(name: str, x: torch.Tensor) -> torch.Tensor:
    return ACTIVATIONS[name].function(x)


def _phi_slope(name: str, x: torch.Tensor) -> torch.Tensor:
    """``phi'(x)`` as torch's own backward formulas compute it."""
    return ACTIVATIONS[name].derivative(x)


def _mix(values: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """``blocks(values)``: each block of n columns times its own (n, n) matrix (a batched
    product over the blocks, never a dense block-diagonal matrix)."""
    batch, size = values.shape
    count, block = blocks.shape[0], blocks.shape[1]
    mixed = torch.bmm(values.view(batch, count, block).transpose(0, 1), blocks)
    return mixed.transpose(0, 1).reshape(batch, size)


def check_blocks(blocks_t: torch.Tensor, state: torch.Tensor) -> None:
    """The stacked ``(K, n, n)`` blocks cover the ``K n`` units of the state."""
    if blocks_t.dim() != 3 or blocks_t.shape[0] * blocks_t.shape[1] != state.shape[-1]:
        raise ValueError(f"blocks {tuple(blocks_t.shape)} do not cover {state.shape[-1]} units")


def _transition(feedback_t: torch.Tensor, step_size: float) -> torch.Tensor:
    eye = torch.eye(feedback_t.shape[0], dtype=feedback_t.dtype, device=feedback_t.device)
    return eye.mul_(1.0 - step_size).add_(feedback_t, alpha=step_size)


class _NativeNetworkEuler(torch.autograd.Function):
    """Native kernels; ``inputs`` projected ``(T, B, N)`` or raw ``(T, B, F)`` with the input
    layer's weight (and bias) applied inside the loop."""

    @staticmethod
    def forward(ctx, inputs, input_weight, input_bias, x0, feedback_t, blocks_t, step_size,
                activation):
        ctx.set_materialize_grads(False)
        need_blocks = ctx.needs_input_grad[5]
        weight = empty_like(x0) if input_weight is None else input_weight
        bias = empty_like(x0) if input_bias is None else input_bias
        states, phi = native.load().network_forward(
            inputs, weight, bias, x0, feedback_t, blocks_t, step_size,
            ACTIVATIONS[activation].native_code, need_blocks)
        ctx.save_for_backward(states, inputs, weight, bias, x0, feedback_t, blocks_t, phi)
        ctx.step_size, ctx.activation, ctx.need_blocks = step_size, activation, need_blocks
        ctx.has_weight, ctx.has_bias = input_weight is not None, input_bias is not None
        return states, states[-1].clone()

    @sequence_backward
    def backward(ctx, grad_states, grad_last):
        states, inputs, weight, bias, x0, feedback_t, blocks_t, phi = ctx.saved_tensors
        (grad_inputs, grad_weight, grad_bias, grad_x0, grad_feedback,
         grad_blocks) = native.load().network_backward(
            dense_or_empty(grad_states, x0), dense_or_empty(grad_last, x0), states, inputs, weight,
            bias, x0, feedback_t, blocks_t, phi,
            ctx.step_size, ACTIVATIONS[ctx.activation].native_code, ctx.need_blocks,
            ctx.needs_input_grad[0])
        return (grad_inputs if ctx.needs_input_grad[0] else None,
                standard_strides(grad_weight) if ctx.has_weight else None,
                grad_bias if ctx.has_bias else None,
                grad_x0, grad_feedback, grad_blocks if ctx.need_blocks else None, None, None)


def _python_forward(u, x0, feedback_t, blocks_t, step_size, activation, phi_store=None):
    transition = _transition(feedback_t, step_size)

    def step_into(t, x, out):
        phi = _phi(activation, x)
        if phi_store is not None:
            phi_store[t].copy_(phi)
        drive = _mix(phi, blocks_t).add_(u[t])
        torch.addmm(drive, x, transition, beta=step_size, out=out)

    return unroll(u, x0, step_into)


class _PythonNetworkEuler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, x0, feedback_t, blocks_t, step_size, activation):
        ctx.set_materialize_grads(False)
        need_blocks = ctx.needs_input_grad[3]
        phi = torch.empty_like(u) if need_blocks else None
        states = _python_forward(u, x0, feedback_t, blocks_t, step_size, activation, phi)
        ctx.save_for_backward(states, x0, feedback_t, blocks_t, phi)
        ctx.step_size, ctx.activation, ctx.need_blocks = step_size, activation, need_blocks
        return states, states[-1].clone()

    @sequence_backward
    def backward(ctx, grad_states, grad_last):
        states, x0, feedback_t, blocks_t, phi = ctx.saved_tensors
        dt, activation = ctx.step_size, ctx.activation
        grad = None if grad_states is None else grad_states.contiguous()
        steps, batch, size = states.shape
        count, block = blocks_t.shape[0], blocks_t.shape[1]
        transition_t = _transition(feedback_t, dt).t()
        blocks = blocks_t.transpose(1, 2)
        scaled = torch.empty_like(states)  # dt * g_t: the input gradient
        g = last_state_gradient(torch.empty_like(x0), grad, grad_last)
        for t in range(steps - 1, -1, -1):
            gu = torch.mul(g, dt, out=scaled[t])
            back = _mix(gu, blocks)
            previous = states[t - 1] if t > 0 else x0
            back.mul_(_phi_slope(activation, previous))
            g_prev = (torch.mm(g, transition_t) if t == 0 or grad is None
                      else torch.addmm(grad[t - 1], g, transition_t))
            g = g_prev.add_(back)
        grad_x0 = g
        grad_feedback = x0.t() @ scaled[0]
        if steps > 1:
            grad_feedback.addmm_(states[:-1].reshape(-1, size).t(), scaled[1:].reshape(-1, size))
        grad_blocks = None
        if ctx.need_blocks:
            phi_blocks = phi.reshape(-1, count, block).permute(1, 2, 0)
            grad_blocks = torch.bmm(phi_blocks, scaled.reshape(-1, count, block).transpose(0, 1))
        return scaled, grad_x0, grad_feedback, grad_blocks, None, None


def network_euler(inputs: torch.Tensor, x0: torch.Tensor, feedback_t: torch.Tensor,
                  blocks_t: torch.Tensor, step_size: float, activation: str = "relu",
                  input_weight: torch.Tensor | None = None,
                  input_bias: torch.Tensor | None = None,
                  backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states, last)``: the states ``(T, B, N)`` of K same-size rate subnetworks joined by
    feedback, Euler (paper 000, eq. 5 with eq. 1 parts), and the last state ``(B, N)`` as a
    separate tensor (see :func:`stablernn.engine.lipschitz.lipschitz_euler`).

    ``inputs``: ``U s_t + b`` for all steps ``(T, B, N)``, or the raw inputs ``(T, B, F)`` when
    ``input_weight`` (``(N, F)``) and optionally ``input_bias`` are given (the native path then
    applies the input layer inside the loop); ``x0``: ``(B, N)``; ``feedback_t``: ``L^T``
    ``(N, N)``; ``blocks_t``: stacked ``W_k^T`` ``(K, n, n)`` with ``K n = N``; ``step_size``:
    dt; ``activation``: one of relu, tanh, sigmoid, softplus. Differentiable in every tensor.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    check_blocks(blocks_t, x0)
    step_size = float(step_size)
    return run_sequence(inputs, x0, (feedback_t, blocks_t), input_weight, input_bias, backend,
                        _NativeNetworkEuler, "network_forward", _PythonNetworkEuler,
                        _python_forward, extra=(step_size, activation),
                        kernel_extra=(step_size, ACTIVATIONS[activation].native_code))
