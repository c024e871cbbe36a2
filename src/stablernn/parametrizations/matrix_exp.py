"""The exponential step's matrix exponential, with a gradient taken at the matrix's own size.

``matrix_exp(X)`` is ``torch.linalg.matrix_exp(X)`` (the same forward, bit for bit); only its
gradient differs. The gradient of ``<G, exp(X)>`` is the adjoint of the Fréchet derivative of
``exp`` at ``X`` applied to ``G``, which is the Fréchet derivative at ``X^T``:
``L(X^T, G) = int_0^1 exp(s X^T) G exp((1 - s) X^T) ds``. torch computes it as the upper-right
block of ``exp([[X^T, G], [0, X^T]])``: an exponential of twice the size (8x the work) whose
norm includes ``||G||``, so a large gradient adds squarings, and with them rounding. In float32
the default Lipschitz RNN's gradient of ``A`` (T = 784, loss on the last state) had a relative
error of 9e-3 that way; 7e-6 here, like its other parameters.

Here the derivative is that of the scaling-and-squaring Taylor evaluation of ``exp(X)`` (the
approach of Al-Mohy and Higham, "Computing the Fréchet derivative of the matrix exponential",
2009, with a Taylor instead of a Padé approximant):

    exp(X) ~ R_1^(2^s),  R_1 = sum_{k<=m} (X / 2^s)^k / k!
    (Horner: R_{m+1} = I, R_k = I + X R_{k+1} / (k 2^s))

with ``theta = ||X||_1 / 2^s <= 1/2`` and the least ``m`` that puts the tail of the series'
derivative below the unit roundoff at that ``theta``. Its adjoint is matrix products of the
matrix's own size, linear in ``G``: the gradient's accuracy does not depend on ``||G||``.
"""

from __future__ import annotations

import math

import torch

SCALED_NORM = 0.5  # ||X||_1 / 2^s at most: the Taylor series then converges like 2^-k / k!


def taylor_degree(dtype: torch.dtype, scaled_norm: float = SCALED_NORM) -> int:
    """The least ``m >= 1`` with ``theta^m / m! <= u / 4`` for ``theta = ||X||_1 / 2^s <= 1/2``
    (``u``: the unit roundoff): the tail of the series' derivative,
    ``sum_{k > m} k theta^(k-1) / k! <= 2 theta^m / m!``, is then below ``u / 2``."""
    roundoff = torch.finfo(dtype).eps / 2
    degree = 1
    while scaled_norm ** degree / math.factorial(degree) > roundoff / 4:
        degree += 1
    return degree


def squarings(norm: float) -> int:
    """The least ``s >= 0`` with ``||X||_1 / 2^s <= SCALED_NORM``, for ``norm = ||X||_1``."""
    return math.ceil(math.log2(norm / SCALED_NORM)) if norm > SCALED_NORM else 0


def exp_frechet_adjoint(matrix: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``L(X^T, G)`` for a square ``X`` (2-D): the gradient with respect to ``X`` of
    ``<G, exp(X)>``, through the scaling-and-squaring Taylor evaluation (module docstring).
    Made of differentiable torch operations (second derivatives differentiate it once more)."""
    norm = float(torch.linalg.matrix_norm(matrix.detach(), 1))
    if not math.isfinite(norm):  # as torch's backward would: not-a-number, for the caller to see
        return torch.full_like(grad, math.nan)
    steps = squarings(norm)
    degree = taylor_degree(matrix.dtype, norm / 2**steps)
    scale = 2.0 ** -steps
    identity = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    # forward, keeping what the adjoint needs: R_{k+1} for each Horner step, R_1^(2^i) per squaring
    horner = [identity]  # R_{m+1}
    for k in range(degree, 0, -1):
        horner.append(torch.addmm(identity, matrix, horner[-1], alpha=scale / k))  # R_k
    powers = [horner[-1]]
    for _ in range(steps):
        powers.append(powers[-1] @ powers[-1])
    # adjoint of the squarings: E' = E E  =>  dE = G E^T + E^T G
    for power in reversed(powers[:-1]):
        grad = torch.addmm(grad @ power.T, power.T, grad)
    # adjoint of Horner: R_k = I + (scale / k) X R_{k+1}
    result = torch.zeros_like(grad)
    for k, following in zip(range(1, degree + 1), reversed(horner[:-1])):  # R_{k+1}
        result = torch.addmm(result, grad, following.T, alpha=scale / k)
        if k < degree:
            grad = torch.mm(matrix.T, grad) * (scale / k)
    return result


@torch.library.custom_op("stablernn::matrix_exp_adjoint", mutates_args=())
def matrix_exp_adjoint(matrix: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """:func:`exp_frechet_adjoint` as a torch operator: its number of squarings depends on the
    matrix's values, which ``torch.compile`` cannot trace, so it stays one opaque node."""
    return exp_frechet_adjoint(matrix, grad)


@matrix_exp_adjoint.register_fake
def _(matrix, grad):
    return torch.empty_like(grad)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _adjoint_backward(ctx, grad_output):
    # second derivatives (Hessians): differentiate the evaluation once more
    matrix, grad = ctx.saved_tensors
    with torch.enable_grad():
        matrix, grad = matrix.detach().requires_grad_(), grad.detach().requires_grad_()
        value = exp_frechet_adjoint(matrix, grad)
    return torch.autograd.grad(value, (matrix, grad), grad_output)


matrix_exp_adjoint.register_autograd(_adjoint_backward, setup_context=_save_inputs)


class _MatrixExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix):
        ctx.save_for_backward(matrix)
        return torch.linalg.matrix_exp(matrix)

    @staticmethod
    def backward(ctx, grad):
        (matrix,) = ctx.saved_tensors
        return matrix_exp_adjoint(matrix, grad)


def matrix_exp(matrix: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp(matrix)``, differentiated at the matrix's own size (module
    docstring): same values, gradients accurate to rounding whatever the gradient's scale,
    second derivatives too. A batch of matrices (more than two dimensions) takes torch's own
    backward."""
    if matrix.dim() != 2:
        return torch.linalg.matrix_exp(matrix)
    return _MatrixExp.apply(matrix)
