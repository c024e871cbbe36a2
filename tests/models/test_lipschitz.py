"""The Lipschitz RNN against the equations of paper 002 (eqs. 1, 6, 9, 10, 12)."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from stablernn import LipschitzCell, LipschitzRNN


def make_layer(method, alpha=1.0, step_size=0.1, hidden=6, features=3, scale=0.4):
    torch.manual_seed(1)
    layer = LipschitzRNN(features, hidden, step_size=step_size, method=method, alpha=alpha,
                         beta_a=0.7, gamma_a=0.2, beta_w=0.6, gamma_w=0.1,
                         parametrization="paper").double()
    with torch.no_grad():  # larger than the paper's init so that A and W matter
        layer.cell.param_a.free.normal_(0, scale)
        layer.cell.param_w.free.normal_(0, scale)
    return layer


def transcription(layer, inputs, h0):
    """Eqs. 9/10/12 line by line, column vectors, one sample at a time."""
    cell = layer.cell
    A, W = cell.A.detach(), cell.W.detach()
    U, b = cell.input_projection.weight.detach(), cell.input_projection.bias.detach()
    eps, alpha = cell.step_size, cell.alpha
    outputs = torch.zeros(inputs.shape[0], inputs.shape[1], A.shape[0], dtype=torch.float64)
    for sample in range(inputs.shape[1]):
        h = h0[sample].clone()
        for t in range(inputs.shape[0]):
            z = W @ h + U @ inputs[t, sample] + b
            if cell.method == "euler":
                h = h + alpha * eps * (A @ h) + eps * torch.tanh(z)
            else:
                h_mid = h + eps / 2 * (alpha * (A @ h)) + eps / 2 * torch.tanh(z)
                h = h + eps * alpha * (A @ h_mid) + eps * torch.tanh(W @ h_mid + U @ inputs[t, sample] + b)
            outputs[t, sample] = h
    return outputs


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_layer_equals_transcription_of_equations(method, alpha):
    layer = make_layer(method, alpha)
    inputs = torch.randn(20, 4, 3, dtype=torch.float64)
    h0 = torch.randn(4, 6, dtype=torch.float64)
    output, h_n = layer(inputs, h0.unsqueeze(0))
    expected = transcription(layer, inputs, h0)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n[0], expected[-1])


@pytest.mark.parametrize("method", ["euler", "rk2"])
def test_cell_stepping_reproduces_layer(method):
    layer = make_layer(method)
    inputs = torch.randn(15, 2, 3, dtype=torch.float64)
    output, _ = layer(inputs)
    h = None
    for t in range(inputs.shape[0]):
        h = layer.cell(inputs[t], h)
        torch.testing.assert_close(h, output[t])
    # online use on an unbatched stream
    h = None
    for t in range(inputs.shape[0]):
        h = layer.cell(inputs[t, 0], h)
    torch.testing.assert_close(h, output[-1, 0])


def test_matrices_follow_symmetric_skew_decomposition():
    cell = LipschitzCell(2, 5, beta_a=0.8, gamma_a=0.3, beta_w=0.6, gamma_w=0.05,
                         parametrization="paper")
    M = cell.param_a.free.detach()
    expected = 0.2 * (M + M.T) + 0.8 * (M - M.T) - 0.3 * torch.eye(5)
    torch.testing.assert_close(cell.A.detach(), expected)
    M = cell.param_w.free.detach()
    torch.testing.assert_close(cell.W.detach(), 0.4 * (M + M.T) + 0.6 * (M - M.T) - 0.05 * torch.eye(5))


def test_initialization_scale_matches_paper_table_8():
    hidden = 256
    cell = LipschitzCell(1, hidden, init_std=6.0)
    std = cell.param_w.free.std().item()
    assert abs(std - 6.0 / hidden) < 0.05 * 6.0 / hidden


def reference_solution(layer, inputs_per_interval, h0):
    """Fine ODE solve of h' = alpha A h + tanh(W h + U x + b), x constant on unit intervals."""
    cell = layer.cell
    A, W = cell.A.detach().numpy(), cell.W.detach().numpy()
    U, b = cell.input_projection.weight.detach().numpy(), cell.input_projection.bias.detach().numpy()
    h = h0.numpy().copy()
    for x in inputs_per_interval.numpy():
        drive = U @ x + b
        solution = solve_ivp(lambda _, y: cell.alpha * A @ y + np.tanh(W @ y + drive), (0.0, 1.0),
                             h, method="DOP853", rtol=1e-12, atol=1e-12)
        h = solution.y[:, -1]
    return h


@pytest.mark.parametrize("method,order", [("euler", 1), ("rk2", 2)])
def test_convergence_order(method, order):
    intervals = torch.randn(4, 3, dtype=torch.float64)
    h0 = torch.randn(6, dtype=torch.float64)
    errors = []
    for steps_per_interval in (8, 16, 32):
        layer = make_layer(method, step_size=1.0 / steps_per_interval, scale=0.8)
        held = intervals.repeat_interleave(steps_per_interval, dim=0)  # input held per interval
        _, h_n = layer(held, h0.unsqueeze(0))
        reference = reference_solution(layer, intervals, h0)
        errors.append(np.linalg.norm(h_n[0].detach().numpy() - reference))
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    expected = 2.0 ** order
    for ratio in ratios:
        assert expected * 0.8 < ratio < expected * 1.25, (errors, ratios)


def test_gradients_finite_over_784_steps_at_paper_settings():
    """Paper 002 table 8, ordered MNIST: N = 128, beta 0.75, gamma 0.001, eps 0.03, 0.1/128."""
    torch.manual_seed(0)
    layer = LipschitzRNN(1, 128, beta_a=0.75, gamma_a=0.001, beta_w=0.75, gamma_w=0.001,
                         step_size=0.03, init_std=0.1, parametrization="paper")
    readout = torch.nn.Linear(128, 10)
    inputs = torch.rand(784, 8, 1)
    output, _ = layer(inputs)
    loss = torch.nn.functional.cross_entropy(readout(output[-1]), torch.randint(0, 10, (8,)))
    loss.backward()
    norms = [p.grad.norm().item() for p in layer.parameters()]
    assert all(math.isfinite(n) for n in norms)
    assert all(n > 0 for n in norms)  # and not vanished to exactly zero
    assert layer.cell.param_a.free.grad.abs().max() < 1e3


@pytest.mark.parametrize("parametrization, options, message", [
    ("paper", {"nonlinear_share": 0.5}, r"nonlinear_share applies to parametrization="
                                        r"'contracting' only .* got nonlinear_share=0\.5"),
    ("contracting", {"beta_a": 0.75}, r"beta_a must be 1 .* got 0\.75"),
    ("contracting", {"gamma_a": 0.0}, r"needs gamma_a > 0 and alpha > 0 .* gamma_a=0\.0"),
    ("contracting", {"nonlinear_share": 1.0}, r"nonlinear_share must be in \(0, 1\), got 1\.0"),
])
def test_options_of_the_other_parametrization_are_refused(parametrization, options, message):
    """An option the chosen parametrization would ignore or that breaks its guarantee is an
    error naming it, never silently dropped."""
    with pytest.raises(ValueError, match=message):
        LipschitzCell(2, 4, parametrization=parametrization, **options)
