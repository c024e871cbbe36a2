"""A whole-sequence recurrence as a torch custom operator, on both engine paths.

Every recurrence of the engine (the Lipschitz RNN's Euler and RK2 steps, the networks' Euler,
RK2 and splitting steps) is registered here with :mod:`torch.library` as two operators,
``stablernn::<name>`` and its backward ``stablernn::<name>_backward``, with their shape functions
(``register_fake``) and autograd formula (``register_autograd``), so ``torch.compile`` keeps a
model using them in one graph and export sees them. One signature for all::

    stablernn::<name>(inputs, input_weight?, input_bias?, start, matrix_t, recurrent_t,
                      step_size, activation, backend, store, store_recurrent)
        -> (states (T, B, N), last (B, N), saved)

``inputs``: ``U x_t + b`` ``(T, B, N)``, or the raw inputs ``(T, B, F)`` with the input layer's
weight (and bias), which the native kernels apply inside the loop and the PyTorch path before it;
``matrix_t`` ``(N, N)`` and ``recurrent_t`` (``(N, N)`` or stacked blocks ``(K, n, n)``) are the
recurrence's matrices; ``saved``: what the backward needs of the forward (empty when ``store`` is
false; ``store_recurrent``: the backward will also need ``recurrent_t``'s gradient).
``backend``: ``"native"``, ``"python"``, or ``""`` to pick when it runs
(:func:`stablernn.engine.native.backend_for`). The backward takes the forward's path.

The backward operator refuses a second derivative with the reason (the hand-written BPTT is
differentiable once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from stablernn.engine import native
from stablernn.engine._outputs import standard_strides
from stablernn.engine.plans import ACTIVATIONS


@dataclass(frozen=True)
class Recurrence:
    """One recurrence on both paths.

    - ``python_forward(u, start, matrix_t, recurrent_t, step_size, activation, saved)`` ->
      states; fills ``saved`` (allocated by ``saved_shape``) when it is given.
    - ``python_backward(grad_states, grad_last, states, saved, start, matrix_t, recurrent_t,
      step_size, activation, need_recurrent)`` -> gradients of ``(u, start, matrix_t,
      recurrent_t)`` (the last ``None`` when not ``need_recurrent``).
    - ``saved_shape(steps, batch, size, store_recurrent)`` -> the shape of ``saved``.
    - ``native_forward``, ``native_backward``: the names of the kernels
      (``csrc/kernels.cpp``), ``forward(inputs, weight, bias, start, matrix_t, recurrent_t,
      step_size, activation code, store, store_recurrent)`` -> ``(states, saved)`` and
      ``backward(grad_states, grad_last, states, saved, inputs, weight, bias, start, matrix_t,
      recurrent_t, step_size, activation code, need_inputs, need_recurrent)`` -> gradients of
      ``(inputs, weight, bias, start, matrix_t, recurrent_t)``, empty where not applicable
      (absent tensors are passed as empty ones); ``None``: no native kernel (the PyTorch path
      always runs).
    """

    python_forward: Callable
    python_backward: Callable
    saved_shape: Callable[[int, int, int, bool], tuple[int, ...]]
    native_forward: Optional[str] = None
    native_backward: Optional[str] = None


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _present(*tensors: Optional[Tensor]) -> list[Tensor]:
    return [t for t in tensors if t is not None]


def _path(recurrence: Recurrence, backend: str, tensors: list[Tensor]) -> str:
    if recurrence.native_forward is None:
        return "python"
    return backend or native.backend_for(*tensors)


def _refuse_second_derivatives(ctx, *grads):
    raise RuntimeError(
        "the engine's backward is differentiable once only: second derivatives through "
        "stablernn's recurrence engine are not available. For Hessians build the loss with "
        "stablernn.analysis.loss_closure (it runs the plain loop), or construct the layer with "
        "engine='loop'")


def define(name: str, recurrence: Recurrence) -> Any:
    """Register ``stablernn::<name>`` and ``stablernn::<name>_backward`` (module docstring);
    returns the forward operator."""

    def forward(inputs: Tensor, input_weight: Optional[Tensor], input_bias: Optional[Tensor],
                start: Tensor, matrix_t: Tensor, recurrent_t: Tensor, step_size: float,
                activation: str, backend: str, store: bool,
                store_recurrent: bool) -> tuple[Tensor, Tensor, Tensor]:
        tensors = _present(inputs, input_weight, input_bias, start, matrix_t, recurrent_t)
        if _path(recurrence, backend, tensors) == "native":
            states, saved = getattr(native.load(), recurrence.native_forward)(
                inputs, _empty(start) if input_weight is None else input_weight,
                _empty(start) if input_bias is None else input_bias, start, matrix_t,
                recurrent_t, step_size, ACTIVATIONS[activation].native_code, store,
                store_recurrent)
        else:
            u = inputs if input_weight is None else F.linear(inputs, input_weight, input_bias)
            saved = None
            if store:
                saved = u.new_empty(recurrence.saved_shape(*u.shape[:2], start.shape[-1],
                                                           store_recurrent))
            states = recurrence.python_forward(u, start, matrix_t, recurrent_t, step_size,
                                               activation, saved)
        return states, states[-1].clone(), saved if store else _empty(start)

    forward.__doc__ = f"``(states, last, saved)`` of the recurrence ``{name}``."
    operator = torch.library.custom_op(f"stablernn::{name}", forward, mutates_args=())

    @operator.register_fake
    def _(inputs, input_weight, input_bias, start, matrix_t, recurrent_t, step_size, activation,
          backend, store, store_recurrent):
        steps, batch, size = inputs.shape[0], inputs.shape[1], start.shape[-1]
        saved = (inputs.new_empty(recurrence.saved_shape(steps, batch, size, store_recurrent))
                 if store else start.new_empty(0))
        return inputs.new_empty((steps, batch, size)), start.new_empty(start.shape), saved

    def backward(grad_states: Optional[Tensor], grad_last: Optional[Tensor], states: Tensor,
                 saved: Tensor, inputs: Tensor, input_weight: Optional[Tensor],
                 input_bias: Optional[Tensor], start: Tensor, matrix_t: Tensor,
                 recurrent_t: Tensor, step_size: float, activation: str, backend: str,
                 need_inputs: bool,
                 need_recurrent: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        if backend == "native":
            grads = getattr(native.load(), recurrence.native_backward)(
                _dense_or_empty(grad_states, start), _dense_or_empty(grad_last, start), states,
                saved, inputs, _empty(start) if input_weight is None else input_weight,
                _empty(start) if input_bias is None else input_bias, start, matrix_t,
                recurrent_t, step_size, ACTIVATIONS[activation].native_code, need_inputs,
                need_recurrent)
            grad_inputs, grad_weight, grad_bias, grad_start, grad_matrix, grad_recurrent = grads
        else:
            grad_u, grad_start, grad_matrix, grad_recurrent = recurrence.python_backward(
                grad_states, grad_last, states, saved, start, matrix_t, recurrent_t, step_size,
                activation, need_recurrent)
            grad_inputs, grad_weight, grad_bias = grad_u, None, None
            if input_weight is not None:  # the input layer, applied before the loop
                rows = grad_u.reshape(-1, grad_u.shape[-1])
                grad_inputs = grad_u @ input_weight
                grad_weight = rows.t() @ inputs.reshape(-1, inputs.shape[-1])
                grad_bias = None if input_bias is None else rows.sum(0)
        # fresh, row-major tensors: outputs of an operator may not alias each other (the kernels
        # return the matrix gradients as views of one buffer)
        return (grad_inputs.contiguous() if need_inputs else _empty(start),
                _empty(start) if input_weight is None else standard_strides(grad_weight),
                _empty(start) if input_bias is None else grad_bias.contiguous(),
                grad_start.contiguous(),
                grad_matrix.clone(memory_format=torch.contiguous_format),
                grad_recurrent.clone(memory_format=torch.contiguous_format)
                if need_recurrent else _empty(start))

    backward.__doc__ = (f"Gradients of ``{name}``'s ``(inputs, input_weight, input_bias, start, "
                        "matrix_t, recurrent_t)``, each empty where absent or not needed.")
    backward_operator = torch.library.custom_op(f"stablernn::{name}_backward", backward,
                                                mutates_args=())

    @backward_operator.register_fake
    def _(grad_states, grad_last, states, saved, inputs, input_weight, input_bias, start,
          matrix_t, recurrent_t, step_size, activation, backend, need_inputs, need_recurrent):
        def like(tensor, needed=True):
            return start.new_empty(0) if tensor is None or not needed \
                else tensor.new_empty(tensor.shape)

        return (like(inputs, need_inputs), like(input_weight), like(input_bias), like(start),
                like(matrix_t), like(recurrent_t, need_recurrent))

    def setup_context(ctx, inputs, output):
        x, weight, bias, start, matrix_t, recurrent_t, step_size, activation, backend = inputs[:9]
        states, _, saved = output
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(states, saved, x, weight, bias, start, matrix_t, recurrent_t)
        ctx.step_size, ctx.activation = step_size, activation
        # the backward takes the forward's path (what it saved differs), whatever the backend is
        # when it runs
        ctx.backend = _path(recurrence, backend,
                            _present(x, weight, bias, start, matrix_t, recurrent_t))

    def autograd_backward(ctx, grad_states, grad_last, _grad_saved):
        if grad_states is None and grad_last is None:
            return (None,) * 11
        states, saved, x, weight, bias, start, matrix_t, recurrent_t = ctx.saved_tensors
        need_inputs, need_recurrent = ctx.needs_input_grad[0], ctx.needs_input_grad[5]
        grads = backward_operator(grad_states, grad_last, states, saved, x, weight, bias, start,
                                  matrix_t, recurrent_t, ctx.step_size, ctx.activation,
                                  ctx.backend, need_inputs, need_recurrent)
        grad_inputs, grad_weight, grad_bias, grad_start, grad_matrix, grad_recurrent = grads
        return (grad_inputs if need_inputs else None, None if weight is None else grad_weight,
                None if bias is None else grad_bias, grad_start, grad_matrix,
                grad_recurrent if need_recurrent else None, None, None, None, None, None)

    operator.register_autograd(autograd_backward, setup_context=setup_context)
    backward_operator.register_autograd(_refuse_second_derivatives,
                                        setup_context=lambda ctx, inputs, output: None)
    return operator


def _dense_or_empty(grad: Optional[Tensor], like: Tensor) -> Tensor:
    """A contiguous gradient, or an empty tensor for ``None`` (the kernels then skip it)."""
    return _empty(like) if grad is None else grad.contiguous()


def run(operator: Any, inputs: Tensor, start: Tensor, matrix_t: Tensor, recurrent_t: Tensor,
        step_size: float, activation: str, input_weight: Tensor | None = None,
        input_bias: Tensor | None = None, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """``(states, last)`` of a registered recurrence: contiguous tensors, what to store for the
    backward (only what the tensors that need a gradient ask for), and in eager mode the path
    fixed here (under ``torch.compile`` it is picked when the operator runs)."""
    tensors = [inputs, start, matrix_t, recurrent_t, input_weight, input_bias]
    grad_enabled = torch.is_grad_enabled()
    store = grad_enabled and any(t is not None and t.requires_grad for t in tensors)
    store_recurrent = grad_enabled and recurrent_t.requires_grad
    contiguous = [None if t is None else t.contiguous() for t in tensors]
    inputs, start, matrix_t, recurrent_t, input_weight, input_bias = contiguous
    if not backend and not torch.compiler.is_compiling():
        backend = native.backend_for(*_present(*contiguous))
    states, last, _ = operator(inputs, input_weight, input_bias, start, matrix_t, recurrent_t,
                               float(step_size), activation, backend or "", store,
                               store_recurrent)
    return states, last
