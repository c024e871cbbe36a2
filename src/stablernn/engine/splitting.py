"""Networks of rate subnetworks, splitting step: the recurrence of a whole sequence.

The step of ``AssemblyCell(method="splitting")`` in row form (states ``(B, N)``), K same-size
blocks of n units, ``E^T = Q^T`` the feedback's step (``flow_t``, the Cayley transform of
``dt L``, see ``AssemblyCell.feedback_flow``)::

    y_t = x_t E^T,     x_{t+1} = (1 - dt) y_t + dt (blocks(phi(y_t)) + u_t)

with ``blocks(z)_k = z_k W_k^T`` (a batched product over the blocks). Pure PyTorch (any
device and dtype) and native kernels (float32 / float64 on the CPU), one torch operator with
hand-written BPTT.

Backward: with ``gu_t = dt g_t`` (g the gradient of ``x_{t+1}``),
``gy_t = (1 - dt) g_t + phi'(y_t) * blocks^T(gu_t)`` and ``g_{t-1} = G_{t-1} + gy_t E``. After
the loop: ``d(E^T) = X_prev^T GY``, ``d(W_k^T) = phi(Y)_k^T GU_k``, ``du = GU``. The forward
stores ``Y`` (and ``phi(Y)`` when the blocks are trained).
"""

from __future__ import annotations

import torch

from stablernn.engine import operators
from stablernn.engine._outputs import last_state_gradient, unroll
from stablernn.engine.network import _mix, _phi, _phi_slope, sequence_function
from stablernn.engine.operators import Recurrence


def _forward(u, x0, flow_t, blocks_t, step_size, activation, saved=None):
    """The loop; ``saved`` (``(1 or 2, T, B, N)``) receives the moved states ``y_t`` and, with
    two rows, ``phi(y_t)`` (the blocks' gradient) when given."""
    def step_into(t, x, out):
        moved = x @ flow_t
        phi = _phi(activation, moved)
        if saved is not None:
            saved[0, t].copy_(moved)
            if saved.shape[0] == 2:
                saved[1, t].copy_(phi)
        drive = _mix(phi, blocks_t).add_(u[t])
        torch.add(drive.mul_(step_size), moved, alpha=1.0 - step_size, out=out)

    return unroll(u, x0, step_into)


def _backward(grad_states, grad_last, states, saved, x0, flow_t, blocks_t, step_size,
              activation, need_blocks):
    """BPTT of :func:`_forward` (module docstring)."""
    dt = step_size
    steps, batch, size = states.shape
    previous = torch.cat([x0.unsqueeze(0), states[:-1]]).reshape(-1, size)
    moved = saved[0]
    blocks = blocks_t.transpose(1, 2)
    scaled = torch.empty_like(states)  # dt g_t: the input gradient
    moved_grad = torch.empty_like(states)
    g = last_state_gradient(torch.empty_like(x0), grad_states, grad_last)
    for t in range(steps - 1, -1, -1):
        gu = torch.mul(g, dt, out=scaled[t])
        back = _mix(gu, blocks).mul_(_phi_slope(activation, moved[t]))
        gy = torch.add(back, g, alpha=1.0 - dt, out=moved_grad[t])
        g = gy @ flow_t.t()
        if t > 0 and grad_states is not None:
            g.add_(grad_states[t - 1])
    grad_flow = previous.t() @ moved_grad.reshape(-1, size)
    grad_blocks = None
    if need_blocks:
        count, block = blocks_t.shape[0], blocks_t.shape[1]
        phi = saved[1].reshape(-1, count, block).permute(1, 2, 0)
        grad_blocks = torch.bmm(phi, scaled.reshape(-1, count, block).transpose(0, 1))
    return scaled, g, grad_flow, grad_blocks


SPLITTING = Recurrence(
    _forward, _backward,
    lambda steps, batch, size, store_blocks: (2 if store_blocks else 1, steps, batch, size),
    "network_splitting_forward", "network_splitting_backward")
network_splitting_op = operators.define("network_splitting", SPLITTING)


network_splitting = sequence_function(network_splitting_op, "network_splitting", """
    ``(states, last)`` of K same-size rate subnetworks joined by feedback, splitting step
    (module docstring); the torch operator ``stablernn::network_splitting``. Arguments as
    :func:`stablernn.engine.network.network_euler`, with ``matrix_t`` the feedback's step
    ``Q^T`` ``(N, N)``. Differentiable in every tensor.""")
