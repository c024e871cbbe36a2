"""The exponential step's matrix exponential: torch's values, and gradients accurate to rounding
whatever the scale of the gradient flowing back (torch's own float32 backward loses digits as
that scale grows, because it exponentiates a block matrix that contains it)."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablernn.models.lipschitz import LipschitzRNN
from stablernn.parametrizations.matrix_exp import (
    SCALED_NORM,
    matrix_exp,
    squarings,
    taylor_degree,
)


def reference_gradient(matrix: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """float64 torch, with the incoming gradient normalized (the map is linear in it), so the
    reference itself needs no extra squarings."""
    scale = grad.double().norm()
    source = matrix.detach().double().requires_grad_()
    torch.linalg.matrix_exp(source).backward(grad.double() / scale)
    return source.grad * scale


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 24), norm=st.floats(1e-3, 20.0), grad_scale=st.floats(-4, 6),
       seed=st.integers(0, 2**31 - 1))
def test_gradient_matches_the_float64_reference(size, norm, grad_scale, seed):
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(size, size, generator=generator, dtype=torch.float64)
    matrix *= norm / torch.linalg.matrix_norm(matrix, 1)
    grad = torch.randn(size, size, generator=generator, dtype=torch.float64) * 10.0 ** grad_scale
    reference = reference_gradient(matrix, grad)
    scale = reference.abs().max()
    for dtype, tolerance in ((torch.float64, 1e-11), (torch.float32, 3e-4)):
        source = matrix.to(dtype).detach().requires_grad_()
        value = matrix_exp(source)
        assert torch.equal(value, torch.linalg.matrix_exp(source.detach()))  # torch's forward
        value.backward(grad.to(dtype))
        error = (source.grad.double() - reference).abs().max() / scale
        assert error < tolerance, (dtype, error.item())


def test_float32_gradient_is_accurate_at_a_large_gradient_scale():
    """The exponential step's shape: skew plus damping, N = 64, a gradient of norm ~1e5."""
    generator = torch.Generator().manual_seed(0)
    skew = torch.randn(64, 64, generator=generator) * 0.05
    matrix = 0.3 * (skew - skew.T - 0.03 * torch.eye(64))
    grad = torch.randn(64, 64, generator=generator) * 1e4
    reference = reference_gradient(matrix, grad)
    source = matrix.clone().requires_grad_()
    matrix_exp(source).backward(grad)
    error = (source.grad.double() - reference).abs().max() / reference.abs().max()
    assert error < 1e-5


def test_first_and_second_derivatives_pass_gradcheck():
    generator = torch.Generator().manual_seed(1)
    for norm in (0.1, 3.0):  # no squaring, and two
        matrix = torch.randn(5, 5, generator=generator, dtype=torch.float64)
        matrix = (matrix * norm / torch.linalg.matrix_norm(matrix, 1)).requires_grad_()
        assert torch.autograd.gradcheck(matrix_exp, (matrix,))
        assert torch.autograd.gradgradcheck(matrix_exp, (matrix,))


def test_degree_and_squarings_bound_the_series_tail():
    for dtype in (torch.float32, torch.float64):
        roundoff = torch.finfo(dtype).eps / 2
        for theta in (0.0, 1e-3, 0.05, 0.3, SCALED_NORM):
            degree = taylor_degree(dtype, theta)
            tail = sum(k * theta ** (k - 1) / math.factorial(k) for k in range(degree + 1, 60))
            assert tail <= roundoff / 2
            if degree > 1:  # the least such degree
                assert theta ** (degree - 1) / math.factorial(degree - 1) > roundoff / 4
        assert taylor_degree(dtype, 0.01) < taylor_degree(dtype, SCALED_NORM)
    for norm in (1e-3, 0.5, 0.51, 7.0, 1e3):
        steps = squarings(norm)
        assert norm / 2 ** steps <= SCALED_NORM
        assert steps == 0 or norm / 2 ** (steps - 1) > SCALED_NORM


def test_a_non_finite_matrix_gives_a_non_finite_gradient():
    source = torch.tensor([[0.0, math.nan], [1.0, 0.0]], requires_grad=True)
    matrix_exp(source).backward(torch.ones(2, 2))
    assert torch.isnan(source.grad).all()


def test_the_exponential_lipschitz_rnn_trains_with_it():
    """The model's gradient equals the float64 model's to float32 rounding."""
    torch.manual_seed(0)
    layer = LipschitzRNN(2, 16)  # contracting, exponential step
    inputs = torch.randn(30, 4, 2)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        model = layer.to(dtype)
        model.zero_grad()
        output, _ = model(inputs.to(dtype))
        (output ** 2).sum().backward()
        grads[dtype] = {name: p.grad.double().clone() for name, p in model.named_parameters()}
    for name, grad in grads[torch.float64].items():
        error = (grads[torch.float32][name] - grad).abs().max() / grad.abs().max()
        assert error < 1e-4, (name, error.item())
