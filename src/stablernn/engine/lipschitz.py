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

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from stablernn.engine import native
from stablernn.engine._outputs import dense_or_empty, last_state_gradient, standard_strides, unroll


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


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


def _python_backward(grad_states, grad_last, states, slope, h0, transition_t, recurrent_t):
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


def _rk2_python_forward(u, h0, linear_t, recurrent_t, step_size, saved=None):
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
                         step_size):
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


def _euler_python_backward(grad_states, grad_last, states, saved, h0, transition_t, recurrent_t,
                           step_size):
    return _python_backward(grad_states, grad_last, states, saved, h0, transition_t, recurrent_t)


def _native_path(backend: str, *tensors: Tensor) -> bool:
    return (backend or native.backend_for(*tensors)) == "native"


@dataclass(frozen=True)
class _Method:
    """One step of the Lipschitz RNN on both paths: the native kernels' names, the PyTorch
    loops, and how many ``(T, B, N)`` tensors the forward saves for the backward."""

    native_forward: str
    native_backward: str
    python_forward: Callable
    python_backward: Callable
    saved_count: int


def _euler_python_forward(u, h0, transition_t, recurrent_t, step_size, saved=None):
    return _python_forward(u, h0, transition_t, recurrent_t, step_size, saved)


_METHODS = {
    "euler": _Method("lipschitz_forward", "lipschitz_backward", _euler_python_forward,
                     _euler_python_backward, 1),
    "rk2": _Method("lipschitz_rk2_forward", "lipschitz_rk2_backward", _rk2_python_forward,
                   _rk2_python_backward, 3),
}


def _saved_shape(method: _Method, inputs: Tensor, h0: Tensor) -> tuple[int, ...]:
    shape = (inputs.shape[0], inputs.shape[1], h0.shape[1])
    return shape if method.saved_count == 1 else (method.saved_count, *shape)


def _define_operator(name: str, method: _Method):
    """Register ``stablernn::<name>`` and its backward ``stablernn::<name>_backward`` as torch
    custom operators with their shapes and autograd formula; returns the forward operator."""

    def forward(inputs: Tensor, input_weight: Optional[Tensor], input_bias: Optional[Tensor],
                h0: Tensor, transition_t: Tensor, recurrent_t: Tensor, step_size: float,
                backend: str, store: bool) -> tuple[Tensor, Tensor, Tensor]:
        tensors = [t for t in (inputs, input_weight, input_bias, h0, transition_t, recurrent_t)
                   if t is not None]
        if _native_path(backend, *tensors):
            states, saved = getattr(native.load(), method.native_forward)(
                inputs, _empty(h0) if input_weight is None else input_weight,
                _empty(h0) if input_bias is None else input_bias, h0, transition_t, recurrent_t,
                step_size, store)
        else:
            u = inputs if input_weight is None else F.linear(inputs, input_weight, input_bias)
            saved = u.new_empty(_saved_shape(method, u, h0)) if store else None
            states = method.python_forward(u, h0, transition_t, recurrent_t, step_size, saved)
        return states, states[-1].clone(), saved if store else _empty(h0)

    forward.__doc__ = (f"``(states, last, saved)`` of ``{name}``; ``saved`` is what the backward "
                       "needs of the forward when ``store`` (empty otherwise). ``backend``: "
                       "``'native'``, ``'python'`` or ``''`` (pick).")
    operator = torch.library.custom_op(f"stablernn::{name}", forward, mutates_args=())

    @operator.register_fake
    def _(inputs, input_weight, input_bias, h0, transition_t, recurrent_t, step_size, backend,
          store):
        shape = (inputs.shape[0], inputs.shape[1], h0.shape[1])
        return (inputs.new_empty(shape), h0.new_empty(h0.shape),
                inputs.new_empty(_saved_shape(method, inputs, h0)) if store else h0.new_empty(0))

    def backward(grad_states: Optional[Tensor], grad_last: Optional[Tensor], states: Tensor,
                 saved: Tensor, inputs: Tensor, input_weight: Optional[Tensor],
                 input_bias: Optional[Tensor], h0: Tensor, transition_t: Tensor,
                 recurrent_t: Tensor, step_size: float, backend: str,
                 need_inputs: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        tensors = [t for t in (inputs, input_weight, input_bias, h0, transition_t, recurrent_t)
                   if t is not None]
        if _native_path(backend, *tensors):
            grads = getattr(native.load(), method.native_backward)(
                dense_or_empty(grad_states, h0), dense_or_empty(grad_last, h0), states, saved,
                inputs, _empty(h0) if input_weight is None else input_weight,
                _empty(h0) if input_bias is None else input_bias, h0, transition_t, recurrent_t,
                step_size, need_inputs)
            grad_inputs, grad_weight, grad_bias, grad_h0, grad_transition, grad_recurrent = grads
            # the kernels return both matrix gradients as views of one (N, 2N) buffer
            grad_transition = grad_transition.clone(memory_format=torch.contiguous_format)
            grad_recurrent = grad_recurrent.clone(memory_format=torch.contiguous_format)
        else:
            grad_u, grad_h0, grad_transition, grad_recurrent = method.python_backward(
                grad_states, grad_last, states, saved, h0, transition_t, recurrent_t, step_size)
            grad_inputs, grad_weight, grad_bias = grad_u, None, None
            if input_weight is not None:  # the input layer, applied before the loop
                rows = grad_u.reshape(-1, grad_u.shape[-1])
                grad_inputs = grad_u @ input_weight
                grad_weight = rows.t() @ inputs.reshape(-1, inputs.shape[-1])
                grad_bias = None if input_bias is None else rows.sum(0)
        return (grad_inputs.contiguous() if need_inputs else _empty(h0),
                _empty(h0) if input_weight is None else standard_strides(grad_weight),
                _empty(h0) if input_bias is None else grad_bias.contiguous(),
                grad_h0.contiguous(), grad_transition.contiguous(), grad_recurrent.contiguous())

    backward.__doc__ = ("Gradients of ``(inputs, input_weight, input_bias, h0, transition_t, "
                        "recurrent_t)``, each empty where that input is absent (or, for "
                        "``inputs``, not ``need_inputs``).")
    backward_operator = torch.library.custom_op(f"stablernn::{name}_backward", backward,
                                                mutates_args=())

    @backward_operator.register_fake
    def _(grad_states, grad_last, states, saved, inputs, input_weight, input_bias, h0,
          transition_t, recurrent_t, step_size, backend, need_inputs):
        def like(tensor):
            return h0.new_empty(0) if tensor is None else tensor.new_empty(tensor.shape)

        return (inputs.new_empty(inputs.shape) if need_inputs else h0.new_empty(0),
                like(input_weight), like(input_bias), like(h0), like(transition_t),
                like(recurrent_t))

    def setup_context(ctx, inputs, output):
        x, weight, bias, h0, transition_t, recurrent_t, step_size, backend, _ = inputs
        states, _, saved = output
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(states, saved, x, weight, bias, h0, transition_t, recurrent_t)
        # the backward must take the forward's path (what it saved differs), whatever the
        # backend is when it runs
        tensors = [t for t in (x, weight, bias, h0, transition_t, recurrent_t) if t is not None]
        ctx.step_size = step_size
        ctx.backend = "native" if _native_path(backend, *tensors) else "python"

    def autograd_backward(ctx, grad_states, grad_last, _grad_saved):
        if grad_states is None and grad_last is None:
            return (None,) * 9
        states, saved, x, weight, bias, h0, transition_t, recurrent_t = ctx.saved_tensors
        need_inputs = ctx.needs_input_grad[0]
        grads = backward_operator(grad_states, grad_last, states, saved, x, weight, bias, h0,
                                  transition_t, recurrent_t, ctx.step_size, ctx.backend,
                                  need_inputs)
        grad_inputs, grad_weight, grad_bias, grad_h0, grad_transition, grad_recurrent = grads
        return (grad_inputs if need_inputs else None, None if weight is None else grad_weight,
                None if bias is None else grad_bias, grad_h0, grad_transition, grad_recurrent,
                None, None, None)

    operator.register_autograd(autograd_backward, setup_context=setup_context)
    backward_operator.register_autograd(_refuse_second_derivatives,
                                        setup_context=lambda ctx, inputs, output: None)
    return operator


def _refuse_second_derivatives(ctx, *grads):
    raise RuntimeError(
        "the engine's backward is differentiable once only: second derivatives through "
        "stablernn's recurrence engine are not available. For Hessians build the loss with "
        "stablernn.analysis.loss_closure (it runs the plain loop), or construct the layer with "
        "engine='loop'")


lipschitz_euler_op = _define_operator("lipschitz_euler", _METHODS["euler"])
lipschitz_rk2_op = _define_operator("lipschitz_rk2", _METHODS["rk2"])


def _run(operator, inputs, h0, matrix_t, recurrent_t, step_size, input_weight, input_bias,
         backend):
    tensors = [inputs, h0, matrix_t, recurrent_t, input_weight, input_bias]
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                  for t in tensors)
    contiguous = [None if t is None else t.contiguous() for t in tensors]
    inputs, h0, matrix_t, recurrent_t, input_weight, input_bias = contiguous
    if not backend and not torch.compiler.is_compiling():  # eager: fix the path here
        backend = native.backend_for(*[t for t in contiguous if t is not None])
    states, last, _ = operator(inputs, input_weight, input_bias, h0, matrix_t, recurrent_t,
                               float(step_size), backend or "", needs_grad)
    return states, last


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
    return _run(lipschitz_euler_op, inputs, h0, transition_t, recurrent_t, step_size,
                input_weight, input_bias, backend)


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
    return _run(lipschitz_rk2_op, inputs, h0, linear_t, recurrent_t, step_size, input_weight,
                input_bias, backend)
