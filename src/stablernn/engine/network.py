"""Networks of rate subnetworks with feedback: the Euler and RK2 recurrences of a whole sequence.

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

from stablernn.engine import operators
from stablernn.engine._outputs import last_state_gradient, unroll
from stablernn.engine.operators import Recurrence
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


def check_network(blocks_t: torch.Tensor, state: torch.Tensor, activation: str) -> None:
    """The stacked ``(K, n, n)`` blocks cover the ``K n`` units of the state; a known
    activation."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    if blocks_t.dim() != 3 or blocks_t.shape[0] * blocks_t.shape[1] != state.shape[-1]:
        raise ValueError(f"blocks {tuple(blocks_t.shape)} do not cover {state.shape[-1]} units")


def _transition(feedback_t: torch.Tensor, step_size: float) -> torch.Tensor:
    eye = torch.eye(feedback_t.shape[0], dtype=feedback_t.dtype, device=feedback_t.device)
    return eye.mul_(1.0 - step_size).add_(feedback_t, alpha=step_size)


def _python_forward(u, x0, feedback_t, blocks_t, step_size, activation, phi_store=None):
    """The Euler loop; ``phi_store`` receives ``phi(x_t)`` of every step's start (the block
    weights' gradient) when given and not empty."""
    transition = _transition(feedback_t, step_size)
    phi_store = phi_store if phi_store is not None and phi_store.numel() else None

    def step_into(t, x, out):
        phi = _phi(activation, x)
        if phi_store is not None:
            phi_store[t].copy_(phi)
        drive = _mix(phi, blocks_t).add_(u[t])
        torch.addmm(drive, x, transition, beta=step_size, out=out)

    return unroll(u, x0, step_into)


def _python_backward(grad_states, grad_last, states, phi, x0, feedback_t, blocks_t, step_size,
                     activation, need_blocks):
    """BPTT of :func:`_python_forward` (module docstring): gradients of ``(u, x0, L^T, W_k^T)``."""
    grad = None if grad_states is None else grad_states.contiguous()
    steps, batch, size = states.shape
    count, block = blocks_t.shape[0], blocks_t.shape[1]
    transition_t = _transition(feedback_t, step_size).t()
    blocks = blocks_t.transpose(1, 2)
    scaled = torch.empty_like(states)  # dt * g_t: the input gradient
    g = last_state_gradient(torch.empty_like(x0), grad, grad_last)
    for t in range(steps - 1, -1, -1):
        gu = torch.mul(g, step_size, out=scaled[t])
        back = _mix(gu, blocks)
        previous = states[t - 1] if t > 0 else x0
        back.mul_(_phi_slope(activation, previous))
        g_prev = (torch.mm(g, transition_t) if t == 0 or grad is None
                  else torch.addmm(grad[t - 1], g, transition_t))
        g = g_prev.add_(back)
    grad_feedback = x0.t() @ scaled[0]
    if steps > 1:
        grad_feedback.addmm_(states[:-1].reshape(-1, size).t(), scaled[1:].reshape(-1, size))
    grad_blocks = None
    if need_blocks:
        phi_blocks = phi.reshape(-1, count, block).permute(1, 2, 0)
        grad_blocks = torch.bmm(phi_blocks, scaled.reshape(-1, count, block).transpose(0, 1))
    return scaled, g, grad_feedback, grad_blocks


def _rk2_forward(u, x0, feedback_t, blocks_t, step_size, activation, saved=None):
    """The explicit midpoint loop of ``AssemblyCell.step`` (``method="rk2"``), with
    ``f(x) = x (L^T - I) + blocks(phi(x)) + u``; ``saved`` (``(1 or 3, T, B, N)``) receives
    every step's midpoint and, with three rows, ``phi(x_t)`` and ``phi(mid_t)`` when given."""
    coupling = feedback_t - torch.eye(feedback_t.shape[0], dtype=feedback_t.dtype,
                                      device=feedback_t.device)
    keep_phi = saved is not None and saved.shape[0] == 3

    def field(x, t, phi_slot):
        phi = _phi(activation, x)
        if keep_phi:
            saved[phi_slot, t].copy_(phi)
        return torch.addmm(_mix(phi, blocks_t).add_(u[t]), x, coupling)

    def step_into(t, x, out):
        midpoint = field(x, t, 1).mul_(0.5 * step_size).add_(x)
        torch.add(x, field(midpoint, t, 2), alpha=step_size, out=out)
        if saved is not None:
            saved[0, t].copy_(midpoint)

    return unroll(u, x0, step_into)


def _rk2_backward(grad_states, grad_last, states, saved, x0, feedback_t, blocks_t, step_size,
                  activation, need_blocks):
    """BPTT of :func:`_rk2_forward`. With ``g`` the gradient of ``x_{t+1}``, ``a = dt g``,
    ``b = dt/2 g_mid``: ``g_mid = a C^T + phi'(mid) * blocks^T(a)``,
    ``g_t = G_t + g + g_mid + b C^T + phi'(x_t) * blocks^T(b)`` (``C = L^T - I``); after the
    loop ``dL^T = Mid^T A + X_prev^T B``, ``d(W_k^T) = phi(Mid)_k^T A_k + phi(X_prev)_k^T B_k``,
    ``du = A + B``."""
    grad = None if grad_states is None else grad_states.contiguous()
    steps, batch, size = states.shape
    count, block = blocks_t.shape[0], blocks_t.shape[1]
    midpoints = saved[0]
    coupling_t = (feedback_t - torch.eye(size, dtype=feedback_t.dtype,
                                         device=feedback_t.device)).t()
    blocks = blocks_t.transpose(1, 2)
    previous = torch.cat([x0.unsqueeze(0), states[:-1]])
    second = torch.empty_like(states)  # dt g
    first = torch.empty_like(states)  # dt/2 g_mid

    def pull(rows, at):  # rows C^T + phi'(at) * blocks^T(rows)
        return torch.addmm(_mix(rows, blocks).mul_(_phi_slope(activation, at)), rows, coupling_t)

    g = last_state_gradient(torch.empty_like(x0), grad, grad_last)
    for t in range(steps - 1, -1, -1):
        g_mid = pull(torch.mul(g, step_size, out=second[t]), midpoints[t])
        g = pull(torch.mul(g_mid, 0.5 * step_size, out=first[t]), previous[t]).add_(g).add_(g_mid)
        if t > 0 and grad is not None:
            g.add_(grad[t - 1])
    grad_feedback = (midpoints.reshape(-1, size).t() @ second.reshape(-1, size)).addmm_(
        previous.reshape(-1, size).t(), first.reshape(-1, size))
    grad_blocks = None
    if need_blocks:
        def block_grad(phi, rows):
            phi = phi.reshape(-1, count, block).permute(1, 2, 0)
            return torch.bmm(phi, rows.reshape(-1, count, block).transpose(0, 1))

        grad_blocks = block_grad(saved[2], second) + block_grad(saved[1], first)
    return first + second, g, grad_feedback, grad_blocks


EULER = Recurrence(
    _python_forward, _python_backward,
    lambda steps, batch, size, store_blocks: (steps, batch, size) if store_blocks else (0,),
    "network_forward", "network_backward")
RK2 = Recurrence(
    _rk2_forward, _rk2_backward,
    lambda steps, batch, size, store_blocks: (3 if store_blocks else 1, steps, batch, size),
    "network_rk2_forward", "network_rk2_backward")
network_euler_op = operators.define("network_euler", EULER)
network_rk2_op = operators.define("network_rk2", RK2)


def sequence_function(operator, name: str, doc: str):
    """The public function of a network operator: ``f(inputs, x0, matrix_t, blocks_t,
    step_size, activation="relu", input_weight=None, input_bias=None, backend=None) ->
    (states, last)``, arguments checked."""

    def run(inputs: torch.Tensor, x0: torch.Tensor, matrix_t: torch.Tensor,
            blocks_t: torch.Tensor, step_size: float, activation: str = "relu",
            input_weight: torch.Tensor | None = None, input_bias: torch.Tensor | None = None,
            backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_network(blocks_t, x0, activation)
        return operators.run(operator, inputs, x0, matrix_t, blocks_t, step_size, activation,
                             input_weight, input_bias, backend)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


network_euler = sequence_function(network_euler_op, "network_euler", """
    ``(states, last)``: the states ``(T, B, N)`` of K same-size rate subnetworks joined by
    feedback, Euler (paper 000, eq. 5 with eq. 1 parts), and the last state ``(B, N)`` as a
    separate tensor (see :func:`stablernn.engine.lipschitz.lipschitz_euler`); the torch operator
    ``stablernn::network_euler``.

    ``inputs``: ``U s_t + b`` for all steps ``(T, B, N)``, or the raw inputs ``(T, B, F)`` when
    ``input_weight`` (``(N, F)``) and optionally ``input_bias`` are given (the native path then
    applies the input layer inside the loop); ``x0``: ``(B, N)``; ``matrix_t``: ``L^T``
    ``(N, N)``; ``blocks_t``: stacked ``W_k^T`` ``(K, n, n)`` with ``K n = N``; ``step_size``: dt;
    ``activation``: one of relu, tanh, sigmoid, softplus; ``backend``: ``"native"``,
    ``"python"`` or ``None`` (pick). Differentiable in every tensor.""")

network_rk2 = sequence_function(network_rk2_op, "network_rk2", """
    ``(states, last)`` of the same networks with the explicit midpoint (RK2) step of
    ``AssemblyCell(method="rk2")``: ``mid = x + dt/2 f(x)``, ``x' = x + dt f(mid)``,
    ``f(x) = -x + blocks(phi(x)) + x L^T + u_t`` (input held over the step). The torch operator
    ``stablernn::network_rk2``; arguments as :func:`network_euler`. The forward also stores the
    midpoints (and ``phi`` of the states and midpoints when the blocks are trained).""")
