"""A conformance check for recurrent layers: the ``torch.nn.RNN`` conventions stablernn promises.

:func:`check_recurrent_layer` runs a layer the way stablernn's training, evaluation and
certificates use it and raises ``AssertionError`` naming the first convention it breaks. Every
model of :data:`stablernn.models.registry.MODELS` passes it (the test suite checks), and a user
who writes a layer can run it on theirs::

    from stablernn.testing import check_recurrent_layer
    check_recurrent_layer(MyLayer(3, 8))

The conventions: input ``(T, B, F)`` (``(B, T, F)`` with ``batch_first``) or unbatched
``(T, F)``; output ``(output, h_n)`` with ``h_n`` of shape ``(1, B, N)`` (``(1, N)`` unbatched;
an LSTM's ``(h_n, c_n)``); ``h_n`` is the last output; an unbatched input equals a batch of one;
``h0`` continues a run (two halves from the middle state equal one run); a ``cell`` stepped by
hand equals the layer; gradients reach every trained parameter; float64 works and agrees with
float32; :func:`stablernn.certify` answers with a :class:`~stablernn.contraction.Certificate`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from stablernn.certification import certify
from stablernn.contraction import Certificate

__all__ = ["check_recurrent_layer"]


def _hidden(state):
    """``h_n`` of a layer's state (an LSTM's state is ``(h_n, c_n)``)."""
    return state[0] if isinstance(state, tuple) else state


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, expected "
                             f"{tuple(expected.shape)}")
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual - expected).abs().max().item()
    if not error <= tolerance * scale:
        raise AssertionError(f"{what}: differs by {error:.3g} (tolerance {tolerance * scale:.3g})")


def check_recurrent_layer(layer: nn.Module, steps: int = 6, batch: int = 3,
                          seed: int = 0) -> list[str]:
    """Check ``layer`` (time-major or ``batch_first``) against the conventions above; returns
    the names of the checks that ran (the cell check needs a ``cell`` attribute). The numerical
    comparisons run in float64 (tolerance 1e-9 relative to the largest entry)."""
    generator = torch.Generator().manual_seed(seed)
    size, hidden = layer.input_size, layer.hidden_size
    batch_first = bool(getattr(layer, "batch_first", False))
    exact = copy.deepcopy(layer).double()
    inputs = torch.randn(steps, batch, size, generator=generator, dtype=torch.float64)
    ran = []

    def run(module, time_major, h0=None):
        layout = time_major.transpose(0, 1) if (batch_first and time_major.dim() == 3) \
            else time_major
        output, state = module(layout) if h0 is None else module(layout, h0)
        if batch_first and time_major.dim() == 3:
            output = output.transpose(0, 1)
        return output, state

    # layouts and shapes, as torch.nn.RNN
    output, state = run(exact, inputs)
    h_n = _hidden(state)
    if tuple(output.shape) != (steps, batch, hidden) or tuple(h_n.shape) != (1, batch, hidden):
        raise AssertionError(f"batched input: output {tuple(output.shape)} and h_n "
                             f"{tuple(h_n.shape)}, expected ({steps}, {batch}, {hidden}) and "
                             f"(1, {batch}, {hidden})")
    _close(h_n[0], output[-1], "h_n against the last output", 1e-12)
    single, single_state = exact(inputs[:, 0])
    if tuple(single.shape) != (steps, hidden) or tuple(_hidden(single_state).shape) != (1, hidden):
        raise AssertionError(f"unbatched input: output {tuple(single.shape)} and h_n "
                             f"{tuple(_hidden(single_state).shape)}, expected ({steps}, "
                             f"{hidden}) and (1, {hidden})")
    _close(single, output[:, 0], "unbatched input against a batch of one", 1e-9)
    ran.append("layouts")
    if hasattr(exact, "batch_first"):
        other = copy.deepcopy(exact)
        other.batch_first = not batch_first
        flipped = inputs if other.batch_first is False else inputs.transpose(0, 1)
        other_output, _ = other(flipped)
        if other.batch_first:
            other_output = other_output.transpose(0, 1)
        _close(other_output, output, "batch_first is only a layout", 1e-9)
        ran.append("batch_first")

    # h0 continues a run; zeros are the default
    middle = steps // 2
    first, middle_state = run(exact, inputs[:middle])
    second, end_state = run(exact, inputs[middle:], middle_state)
    _close(torch.cat([first, second]), output, "two halves from the middle state", 1e-9)
    _close(_hidden(end_state), h_n, "h_n of two halves", 1e-9)
    zeros = torch.zeros(1, batch, hidden, dtype=torch.float64)
    zero_state = (zeros, zeros) if isinstance(state, tuple) else zeros
    _close(run(exact, inputs, zero_state)[0], output, "explicit zero h0 against the default",
           1e-12)
    ran.append("h0")

    # the cell stepped by hand equals the layer
    cell = getattr(exact, "cell", None)
    if cell is not None:
        state_t = torch.zeros(batch, hidden, dtype=torch.float64)
        stepped = []
        for t in range(steps):
            state_t = cell(inputs[t], state_t)
            stepped.append(state_t)
        _close(torch.stack(stepped), output, "the cell stepped by hand", 1e-9)
        ran.append("cell")

    # gradients reach every trained parameter (float32, as trained)
    layer.zero_grad(set_to_none=True)
    output32, state32 = run(layer, inputs.float())
    (output32.square().mean() + _hidden(state32).sum()).backward()
    for name, parameter in layer.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None or not torch.isfinite(parameter.grad).all():
            raise AssertionError(f"parameter {name}: no finite gradient")
        if not parameter.grad.abs().sum() > 0:
            raise AssertionError(f"parameter {name}: gradient is zero")
    layer.zero_grad(set_to_none=True)
    ran.append("gradients")
    _close(output32.detach().double(), output, "float32 against float64", 1e-4)
    ran.append("float64")

    certificate = certify(layer)
    if not isinstance(certificate, Certificate):
        raise AssertionError(f"certify returned {type(certificate).__name__}, expected a "
                             "Certificate")
    ran.append("certificate")
    return ran
