"""The matrix exponential of the exponential step, with a backward that works at the matrix's size.

``matrix_exp(X)`` is ``torch.linalg.matrix_exp(X)`` (the same forward, bit for bit); only its
gradient differs. The gradient of ``<G, exp(X)>`` is the adjoint of the Fréchet derivative of
``exp`` at ``X`` applied to ``G``, which equals the Fréchet derivative at ``X^T``:
``L(X^T, G) = int_0^1 exp(s X^T) G exp((1 - s) X^T) ds``. torch computes it as the upper-right
block of ``exp([[X^T, G], [0, X^T]])``: one exponential of twice the size (8x the work), scaled
by ``||G||`` as well as ``||X||``, so a large gradient adds squarings, and with them rounding
(float32, ``||X|| = 0.09``, ``||G||_2 = 2300``: 2e-4 relative error).

Here the derivative is taken through the scaling-and-squaring Taylor evaluation of ``exp(X)``
(Al-Mohy and Higham, "Computing the Fréchet derivative of the matrix exponential", 2009, differentiate
that algorithm in the same way):

    exp(X) ~ R_1^(2^s),  R_1 = sum_{k<=m} (X / 2^s)^k / k!
    (Horner: R_{m+1} = I, R_k = I + X R_{k+1} / (k 2^s))

with ``||X||_1 / 2^s <= 1/2`` and ``m`` such that the series' tail and its derivative are below
the working precision's unit roundoff. Its adjoint is plain matrix products of the matrix's own
size, linear in ``G``: the gradient's accuracy does not depend on ``||G||``.
"""

from __future__ import annotations

import math

import torch

SCALED_NORM = 0.5  # ||X||_1 / 2^s at most: the Taylor series then converges like 2^-k / k!


def taylor_degree(dtype: torch.dtype) -> int:
    """The least ``m`` with ``SCALED_NORM^m / m! <= u / 4`` (``u``: the unit roundoff): the
    tail of the series and of its derivative, ``sum_{k > m} k theta^(k-1) / k!``, below ``u``."""
    roundoff = torch.finfo(dtype).eps / 2
    degree = 1
    while SCALED_NORM ** degree / math.factorial(degree) > roundoff / 4:
        degree += 1
    return degree


def squarings(norm: float) -> int:
    """The least ``s >= 0`` with ``||X||_1 / 2^s <= SCALED_NORM``, for ``norm = ||X||_1``."""
    return math.ceil(math.log2(norm / SCALED_NORM)) if norm > SCALED_NORM else 0


def exp_frechet_adjoint(matrix: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``L(X^T, G)`` for a square ``X`` (2-D): the gradient with respect to ``X`` of
    ``<G, exp(X)>``, through the scaling-and-squaring Taylor evaluation (module docstring).
    Made of differentiable torch operations, so second derivatives (``create_graph=True``) flow
    through it."""
    norm = float(torch.linalg.matrix_norm(matrix.detach(), 1))
    if not math.isfinite(norm):  # as torch's backward would: not-a-number, for the caller to see
        return torch.full_like(grad, math.nan)
    steps, degree = squarings(norm), taylor_degree(matrix.dtype)
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


class _MatrixExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix):
        ctx.save_for_backward(matrix)
        return torch.linalg.matrix_exp(matrix)

    @staticmethod
    def backward(ctx, grad):
        (matrix,) = ctx.saved_tensors
        return exp_frechet_adjoint(matrix, grad)


def matrix_exp(matrix: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp(matrix)``, differentiated at the matrix's own size (module
    docstring): same values, gradients accurate to rounding whatever the gradient's scale.
    A batch of matrices (more than two dimensions) takes torch's own backward."""
    if matrix.dim() != 2:
        return torch.linalg.matrix_exp(matrix)
    return _MatrixExp.apply(matrix)
