"""The Lipschitz RNN's Euler recurrence over a whole sequence, with hand-written BPTT.

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
"""

from __future__ import annotations

from typing import Optional

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


def _native_path(backend: str, *tensors: Tensor) -> bool:
    return (backend or native.backend_for(*tensors)) == "native"


@torch.library.custom_op("stablernn::lipschitz_euler", mutates_args=())
def lipschitz_euler_op(inputs: Tensor, input_weight: Optional[Tensor], input_bias: Optional[Tensor],
                       h0: Tensor, transition_t: Tensor, recurrent_t: Tensor, step_size: float,
                       backend: str, store: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(states, last, saved)``: the recurrence (module docstring); ``saved`` is what the
    backward needs of the forward when ``store`` (``tanh(z_t)`` native, ``eps (1 - d^2)``
    python; empty otherwise). ``backend``: ``"native"``, ``"python"`` or ``""`` (pick)."""
    tensors = [t for t in (inputs, input_weight, input_bias, h0, transition_t, recurrent_t)
               if t is not None]
    if _native_path(backend, *tensors):
        states, saved = native.load().lipschitz_forward(
            inputs, _empty(h0) if input_weight is None else input_weight,
            _empty(h0) if input_bias is None else input_bias, h0, transition_t, recurrent_t,
            step_size, store)
    else:
        u = inputs if input_weight is None else F.linear(inputs, input_weight, input_bias)
        saved = torch.empty_like(u) if store else None
        states = _python_forward(u, h0, transition_t, recurrent_t, step_size, saved)
    return states, states[-1].clone(), saved if store else _empty(h0)


@lipschitz_euler_op.register_fake
def _(inputs, input_weight, input_bias, h0, transition_t, recurrent_t, step_size, backend, store):
    shape = (inputs.shape[0], inputs.shape[1], h0.shape[1])
    return (inputs.new_empty(shape), h0.new_empty(h0.shape),
            inputs.new_empty(shape) if store else h0.new_empty(0))


@torch.library.custom_op("stablernn::lipschitz_euler_backward", mutates_args=())
def lipschitz_euler_backward_op(
        grad_states: Optional[Tensor], grad_last: Optional[Tensor], states: Tensor, saved: Tensor,
        inputs: Tensor, input_weight: Optional[Tensor], input_bias: Optional[Tensor], h0: Tensor,
        transition_t: Tensor, recurrent_t: Tensor, step_size: float, backend: str,
        need_inputs: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of ``(inputs, input_weight, input_bias, h0, transition_t, recurrent_t)``, each
    empty where that input is absent (or, for ``inputs``, not ``need_inputs``)."""
    tensors = [t for t in (inputs, input_weight, input_bias, h0, transition_t, recurrent_t)
               if t is not None]
    if _native_path(backend, *tensors):
        grads = native.load().lipschitz_backward(
            dense_or_empty(grad_states, h0), dense_or_empty(grad_last, h0), states, saved,
            inputs, _empty(h0) if input_weight is None else input_weight,
            _empty(h0) if input_bias is None else input_bias, h0, transition_t, recurrent_t,
            step_size, need_inputs)
        grad_inputs, grad_weight, grad_bias, grad_h0, grad_transition, grad_recurrent = grads
        # the kernels return both matrix gradients as views of one (N, 2N) buffer
        grad_transition = grad_transition.clone(memory_format=torch.contiguous_format)
        grad_recurrent = grad_recurrent.clone(memory_format=torch.contiguous_format)
    else:
        grad_u, grad_h0, grad_transition, grad_recurrent = _python_backward(
            grad_states, grad_last, states, saved, h0, transition_t, recurrent_t)
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


@lipschitz_euler_backward_op.register_fake
def _(grad_states, grad_last, states, saved, inputs, input_weight, input_bias, h0, transition_t,
      recurrent_t, step_size, backend, need_inputs):
    return (inputs.new_empty(inputs.shape) if need_inputs else h0.new_empty(0),
            h0.new_empty(0) if input_weight is None else input_weight.new_empty(input_weight.shape),
            h0.new_empty(0) if input_bias is None else input_bias.new_empty(input_bias.shape),
            h0.new_empty(h0.shape), transition_t.new_empty(transition_t.shape),
            recurrent_t.new_empty(recurrent_t.shape))


def _setup_context(ctx, inputs, output):
    x, weight, bias, h0, transition_t, recurrent_t, step_size, backend, _ = inputs
    states, _, saved = output
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(states, saved, x, weight, bias, h0, transition_t, recurrent_t)
    # the backward must take the forward's path (what it saved differs), whatever the backend
    # is when it runs
    tensors = [t for t in (x, weight, bias, h0, transition_t, recurrent_t) if t is not None]
    ctx.step_size = step_size
    ctx.backend = "native" if _native_path(backend, *tensors) else "python"


def _backward(ctx, grad_states, grad_last, _grad_saved):
    if grad_states is None and grad_last is None:
        return (None,) * 9
    states, saved, x, weight, bias, h0, transition_t, recurrent_t = ctx.saved_tensors
    need_inputs = ctx.needs_input_grad[0]
    grads = lipschitz_euler_backward_op(grad_states, grad_last, states, saved, x, weight, bias,
                                        h0, transition_t, recurrent_t, ctx.step_size,
                                        ctx.backend, need_inputs)
    grad_inputs, grad_weight, grad_bias, grad_h0, grad_transition, grad_recurrent = grads
    return (grad_inputs if need_inputs else None, None if weight is None else grad_weight,
            None if bias is None else grad_bias, grad_h0, grad_transition, grad_recurrent,
            None, None, None)


lipschitz_euler_op.register_autograd(_backward, setup_context=_setup_context)


def _refuse_second_derivatives(ctx, *grads):
    raise RuntimeError(
        "the engine's backward is differentiable once only: second derivatives through "
        "stablernn's recurrence engine are not available. For Hessians build the loss with "
        "stablernn.analysis.loss_closure (it runs the plain loop), or construct the layer with "
        "engine='loop'")


lipschitz_euler_backward_op.register_autograd(_refuse_second_derivatives,
                                              setup_context=lambda ctx, inputs, output: None)


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
    tensors = [inputs, h0, transition_t, recurrent_t, input_weight, input_bias]
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                  for t in tensors)
    contiguous = [None if t is None else t.contiguous() for t in tensors]
    inputs, h0, transition_t, recurrent_t, input_weight, input_bias = contiguous
    if not backend and not torch.compiler.is_compiling():  # eager: fix the path here
        backend = native.backend_for(*[t for t in contiguous if t is not None])
    states, last, _ = lipschitz_euler_op(inputs, input_weight, input_bias, h0, transition_t,
                                         recurrent_t, float(step_size), backend or "",
                                         needs_grad)
    return states, last
