"""The Lipschitz RNN's Euler recurrence over a whole sequence, with hand-written BPTT.

Paper 002, eq. 9, in row form (states ``(B, N)``)::

    h_{t+1} = eps * tanh(u_t + h_t W^T) + h_t P,    P = (I + eps alpha A)^T

exactly as :meth:`stablernn.models.lipschitz.LipschitzCell.step` computes it from
``prepare()`` (``P`` is ``transition_t``, ``W^T`` is ``recurrent_t``).

The sequence is one ``torch.autograd.Function`` whose inputs are the *prepared* matrices, so the
parameterization upstream (the symmetric-skew A and W, the input layer) is differentiated by
autograd as usual. Backward (BPTT): only the state-gradient recursion is sequential,

    dz_t = eps (1 - d_t^2) g_t,    g_{t-1} = G_{t-1} + g_t P^T + dz_t W,

and the weight gradients are two large products after the loop,
``dP = H_prev^T G`` and ``dW^T = H_prev^T DZ`` over all ``T B`` rows, ``du = DZ``.

Memory: the forward stores the states (its output) and ``d_t = tanh(z_t)``, O(T B N) each; the
backward adds the per-step state gradients and ``DZ`` (two more O(T B N) buffers; the native
kernels keep them for two chunks of 32 steps only when ``DZ`` is not returned, i.e. with the
input layer fused and inputs that need no gradient).
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


class _NativeLipschitzEuler(torch.autograd.Function):
    """Native kernels; ``inputs`` are projected ``(T, B, N)``, or raw ``(T, B, F)`` when
    ``input_weight`` is given (the input layer then runs inside the loop: no ``(T, B, N)``
    projected tensor is ever built, forward or backward)."""

    @staticmethod
    def forward(ctx, inputs, input_weight, input_bias, h0, transition_t, recurrent_t, step_size):
        ctx.set_materialize_grads(False)
        weight = empty_like(h0) if input_weight is None else input_weight
        bias = empty_like(h0) if input_bias is None else input_bias
        states, drive = native.load().lipschitz_forward(inputs, weight, bias, h0, transition_t,
                                                        recurrent_t, step_size, True)
        ctx.save_for_backward(states, drive, inputs, weight, bias, h0, transition_t, recurrent_t)
        ctx.step_size = step_size
        ctx.has_weight, ctx.has_bias = input_weight is not None, input_bias is not None
        return states, states[-1].clone()

    @sequence_backward
    def backward(ctx, grad_states, grad_last):
        states, drive, inputs, weight, bias, h0, transition_t, recurrent_t = ctx.saved_tensors
        grad_inputs, grad_weight, grad_bias, grad_h0, grad_transition, grad_recurrent = (
            native.load().lipschitz_backward(dense_or_empty(grad_states, h0),
                                             dense_or_empty(grad_last, h0), states, drive,
                                             inputs, weight, bias, h0, transition_t,
                                             recurrent_t, ctx.step_size,
                                             ctx.needs_input_grad[0]))
        return (grad_inputs if ctx.needs_input_grad[0] else None,
                standard_strides(grad_weight) if ctx.has_weight else None,
                grad_bias if ctx.has_bias else None,
                grad_h0, grad_transition, grad_recurrent, None)


def _python_forward(u, h0, transition_t, recurrent_t, step_size, slope=None):
    """The loop of ``LipschitzCell.step`` (same ops, bitwise the same states), writing into one
    preallocated output; ``slope`` receives ``eps (1 - d^2)`` for the backward when given."""

    def step_into(t, hidden, out):
        drive = torch.tanh(torch.addmm(u[t], hidden, recurrent_t))
        torch.addmm(drive, hidden, transition_t, beta=step_size, out=out)
        if slope is not None:
            torch.mul(drive, drive, out=slope[t])
            slope[t].mul_(-step_size).add_(step_size)

    return unroll(u, h0, step_into)


class _PythonLipschitzEuler(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, h0, transition_t, recurrent_t, step_size):
        ctx.set_materialize_grads(False)
        slope = torch.empty_like(u)
        states = _python_forward(u, h0, transition_t, recurrent_t, step_size, slope)
        ctx.save_for_backward(states, slope, h0, transition_t, recurrent_t)
        return states, states[-1].clone()

    @sequence_backward
    def backward(ctx, grad_states, grad_last):
        states, slope, h0, transition_t, recurrent_t = ctx.saved_tensors
        grad = None if grad_states is None else grad_states.contiguous()
        steps, _, size = states.shape
        transition, recurrent = transition_t.t(), recurrent_t.t()
        state_grads = torch.empty_like(states)
        drive_grads = torch.empty_like(states)
        last_state_gradient(state_grads[steps - 1], grad, grad_last)
        for t in range(steps - 1, -1, -1):
            g = state_grads[t]
            dz = torch.mul(g, slope[t], out=drive_grads[t])
            if t > 0:
                if grad is None:
                    torch.mm(g, transition, out=state_grads[t - 1])
                else:
                    torch.addmm(grad[t - 1], g, transition, out=state_grads[t - 1])
                state_grads[t - 1].addmm_(dz, recurrent)
            else:
                grad_h0 = torch.mm(g, transition).addmm_(dz, recurrent)
        grad_transition = h0.t() @ state_grads[0]
        grad_recurrent = h0.t() @ drive_grads[0]
        if steps > 1:
            previous = states[:-1].reshape(-1, size).t()
            grad_transition.addmm_(previous, state_grads[1:].reshape(-1, size))
            grad_recurrent.addmm_(previous, drive_grads[1:].reshape(-1, size))
        return drive_grads, grad_h0, grad_transition, grad_recurrent, None


def lipschitz_euler(inputs: torch.Tensor, h0: torch.Tensor, transition_t: torch.Tensor,
                    recurrent_t: torch.Tensor, step_size: float,
                    input_weight: torch.Tensor | None = None,
                    input_bias: torch.Tensor | None = None,
                    backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states, last)``: the states ``(T, B, N)`` of the Lipschitz RNN's Euler recurrence
    (paper 002, eq. 9) and the last state ``(B, N)`` as a separate tensor, like
    ``torch.nn.RNN``'s ``(output, h_n)``: a loss on ``last`` costs no dense ``(T, B, N)``
    gradient (a loss on ``states[-1]`` makes autograd build one).

    ``inputs``: the projected inputs ``U x_t + b`` for all steps, ``(T, B, N)``; or, when
    ``input_weight`` (``U``, ``(N, F)``) and optionally ``input_bias`` (``(N,)``) are given, the
    raw inputs ``(T, B, F)``: the native path then applies the input layer inside the loop.
    ``h0``: ``(B, N)``; ``transition_t``: ``(I + eps alpha A)^T``; ``recurrent_t``: ``W^T``
    (both ``(N, N)``, as ``LipschitzCell.prepare()`` returns them); ``step_size``: eps.
    Differentiable in every tensor. ``backend``: ``"native"`` or ``"python"``; ``None`` picks
    (:func:`stablernn.engine.native.backend_for`).
    """
    step_size = float(step_size)
    return run_sequence(inputs, h0, (transition_t, recurrent_t), input_weight, input_bias,
                        backend, _NativeLipschitzEuler, "lipschitz_forward",
                        _PythonLipschitzEuler, _python_forward, extra=(step_size,),
                        kernel_extra=(step_size,))
