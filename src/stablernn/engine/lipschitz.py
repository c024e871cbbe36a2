"""The Lipschitz RNN's recurrence over a whole sequence (Euler and RK2), with hand-written BPTT.

Paper 002, eq. 9, in row form (states ``(B, N)``)::

    h_{t+1} = eps * tanh(u_t + h_t W^T) + h_t P,    P = (I + eps alpha A)^T

exactly as :meth:`stablernn.models.lipschitz.LipschitzCell.step` computes it from
``prepare()`` (``P`` is ``transition_t``, ``W^T`` is ``recurrent_t``).

The sequence is one torch custom operator, ``torch.ops.stablernn.lipschitz_euler`` (its backward
``stablernn::lipschitz_euler_backward``), registered with :mod:`torch.library` with its autograd
formula and its shapes (``register_fake``), so ``torch.compile`` keeps it in the graph. Its inputs
are the *prepared* matrices, so the parameterization upstream (the symmetric-skew A and W) is
differentiated by autograd as usual. One operator serves both paths: the native kernels or the
pure-PyTorch loop, chosen when it runs (:func:`stablernn.engine.native.backend_for`).

Backward (BPTT): only the state-gradient recursion is sequential,

    dz_t = eps (1 - d_t^2) g_t,    g_{t-1} = G_{t-1} + g_t P^T + dz_t W,

and the weight gradients are two large products after the loop,
``dP = H_prev^T G`` and ``dW^T = H_prev^T DZ`` over all ``T B`` rows, ``du = DZ``.

Memory: the forward stores the states (its output) and ``d_t = tanh(z_t)``, O(T B N) each; the
backward adds the per-step state gradients and ``DZ`` (two more O(T B N) buffers; the native
kernels keep them for two chunks of 32 steps only when ``DZ`` is not returned, i.e. with the
input layer fused and inputs that need no gradient).

RK2 (paper 002, eq. 10; :func:`lipschitz_rk2`, operator ``stablernn::lipschitz_rk2``): the same
design with two products per step, forward and backward (formulas in :func:`_rk2_python_backward`);
the forward also stores the midpoints and both ``tanh`` values.
"""

from __future__ import annotations

import torch

from stablernn.engine import operators
from stablernn.engine._outputs import last_state_gradient, unroll
from stablernn.engine.operators import Recurrence


def _python_forward(u, h0, transition_t, recurrent_t, step_size, _activation="tanh", slope=None):
    """The loop of ``LipschitzCell.step`` (same ops, bitwise the same states), writing into one
    preallocated output; ``slope`` receives ``eps (1 - d^2)`` for the backward when given."""

    def step_into(t, hidden, out):
        drive = torch.tanh(torch.addmm(u[t], hidden, recurrent_t))
        torch.addmm(drive, hidden, transition_t, beta=step_size, out=out)
        if slope is not None:
            torch.mul(drive, drive, out=slope[t])
            slope[t].mul_(-step_size).add_(step_size)

    return unroll(u, h0, step_into)


def _python_backward(grad_states, grad_last, states, slope, h0, transition_t, recurrent_t,
                     _step_size=None, _activation="tanh", _need_recurrent=True):
    """BPTT of :func:`_python_forward`: gradients of ``(u, h0, transition_t, recurrent_t)``."""
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
    return drive_grads, grad_h0, grad_transition, grad_recurrent


def _rk2_python_forward(u, h0, linear_t, recurrent_t, step_size, _activation="tanh", saved=None):
    """The explicit midpoint loop of ``LipschitzCell.step`` (``method="rk2"``); ``saved``
    ``(3, T, B, N)`` receives the midpoints, ``d1`` and ``d2`` for the backward when given."""
    half = 0.5 * step_size

    def step_into(t, hidden, out):
        first = torch.tanh(torch.addmm(u[t], hidden, recurrent_t))
        midpoint = torch.addmm(first, hidden, linear_t).mul_(half).add_(hidden)
        second = torch.tanh(torch.addmm(u[t], midpoint, recurrent_t))
        out.copy_(torch.addmm(second, midpoint, linear_t).mul_(step_size).add_(hidden))
        if saved is not None:
            saved[0, t].copy_(midpoint)
            saved[1, t].copy_(first)
            saved[2, t].copy_(second)

    return unroll(u, h0, step_into)


def _rk2_python_backward(grad_states, grad_last, states, saved, h0, linear_t, recurrent_t,
                         step_size, _activation="tanh", _need_recurrent=True):
    """BPTT of :func:`_rk2_python_forward`: with ``g`` the gradient of ``h_{t+1}``,
    ``r2 = [eps g | eps (1 - d2^2) g]``, ``g_mid = r2 [L^T ; W]``,
    ``r1 = [eps/2 g_mid | eps/2 (1 - d1^2) g_mid]``,
    ``g_t = G_t + g + g_mid + r1 [L^T ; W]``; after the
    loop ``[dL | dW^T] = Mid^T R2 + H_prev^T R1`` and ``du = `` the right halves of ``R1 + R2``."""
    grad = None if grad_states is None else grad_states.contiguous()
    steps, batch, size = states.shape
    midpoints, first, second = saved[0], saved[1], saved[2]
    back = torch.cat([linear_t.t(), recurrent_t.t()], 0)  # [L^T ; W]
    rows_second = states.new_empty(steps, batch, 2 * size)
    rows_first = states.new_empty(steps, batch, 2 * size)
    g = last_state_gradient(torch.empty_like(h0), grad, grad_last)
    half = 0.5 * step_size
    for t in range(steps - 1, -1, -1):
        torch.mul(g, step_size, out=rows_second[t, :, :size])
        torch.mul(rows_second[t, :, :size], 1 - second[t] * second[t], out=rows_second[t, :, size:])
        g_mid = rows_second[t] @ back
        torch.mul(g_mid, half, out=rows_first[t, :, :size])
        torch.mul(rows_first[t, :, :size], 1 - first[t] * first[t], out=rows_first[t, :, size:])
        g = torch.addmm(g, rows_first[t], back).add_(g_mid)
        if t > 0 and grad is not None:
            g.add_(grad[t - 1])
    previous = torch.cat([h0.unsqueeze(0), states[:-1]]).reshape(-1, size)
    grad_matrices = (midpoints.reshape(-1, size).t() @ rows_second.reshape(-1, 2 * size)
                     ).addmm_(previous.t(), rows_first.reshape(-1, 2 * size))
    grad_u = rows_first[:, :, size:] + rows_second[:, :, size:]
    return grad_u, g, grad_matrices[:, :size].clone(), grad_matrices[:, size:].clone()


EULER = Recurrence(_python_forward, _python_backward,
                   lambda steps, batch, size, _store_recurrent: (steps, batch, size),
                   "lipschitz_forward", "lipschitz_backward")
RK2 = Recurrence(_rk2_python_forward, _rk2_python_backward,
                 lambda steps, batch, size, _store_recurrent: (3, steps, batch, size),
                 "lipschitz_rk2_forward", "lipschitz_rk2_backward")
lipschitz_euler_op = operators.define("lipschitz_euler", EULER)
lipschitz_rk2_op = operators.define("lipschitz_rk2", RK2)


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
    return operators.run(lipschitz_euler_op, inputs, h0, transition_t, recurrent_t, step_size,
                         "tanh", input_weight, input_bias, backend)


def lipschitz_rk2(inputs: torch.Tensor, h0: torch.Tensor, linear_t: torch.Tensor,
                  recurrent_t: torch.Tensor, step_size: float,
                  input_weight: torch.Tensor | None = None,
                  input_bias: torch.Tensor | None = None,
                  backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(states, last)`` of the Lipschitz RNN's RK2 step (paper 002, eq. 10, the explicit
    midpoint rule, input held over the step), in row form with ``L = alpha A^T``
    (``linear_t``)::

        mid = h + eps/2 (h L + tanh(h W^T + u_t)),   h' = h + eps (mid L + tanh(mid W^T + u_t))

    as ``LipschitzCell.step`` computes it with ``method="rk2"``. The torch operator
    ``stablernn::lipschitz_rk2``; arguments as :func:`lipschitz_euler`, with ``linear_t`` in
    place of the transition. The forward stores the midpoints and both ``tanh`` values (three
    O(T B N) tensors) for the backward."""
    return operators.run(lipschitz_rk2_op, inputs, h0, linear_t, recurrent_t, step_size, "tanh",
                         input_weight, input_bias, backend)
