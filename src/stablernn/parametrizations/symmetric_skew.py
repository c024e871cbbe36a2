"""The symmetric-skew decomposition of paper 002 (eq. 6, eqs. 2a/2b)."""

from __future__ import annotations

import torch
from torch import nn

from stablernn._checks import check_in_range, check_non_negative, check_positive_int


class SymmetricSkew(nn.Module):
    r"""Builds ``S = (1 - beta)(M + M^T) + beta (M - M^T) - gamma I`` from a free matrix ``M``.

    Paper 002, eq. 6 (and eqs. 2a, 2b for A and W). ``beta`` in [0, 1] sets the width of the
    spectrum, ``gamma >= 0`` shifts it left. Proposition 1: the real parts of the eigenvalues of
    S, and the eigenvalues of ``S_sym = (S + S^T) / 2 = 2 (1 - beta) M_sym - gamma I``, lie in
    ``[2 (1-beta) lambda_min(M_sym) - gamma, 2 (1-beta) lambda_max(M_sym) - gamma]`` with
    ``M_sym = (M + M^T) / 2``. (The paper prints the interval without the factor 2, having written
    ``S_sym = S + S^T = (1-beta) M_sym - gamma I`` in its proof; the printed interval fails e.g.
    for ``beta = 0, M = I``. The tests check the corrected one.)

    ``M`` is drawn from N(0, (init_std / N)^2) as the official code does (paper 002, table 8
    writes sigma = init_std / N), so that S is close to ``-gamma I`` at the start.

    The identity is a registered buffer, so it moves with ``.to(device)``.
    """

    def __init__(self, size: int, beta: float, gamma: float, init_std: float = 0.1) -> None:
        super().__init__()
        self.size = check_positive_int("size", size)
        self.beta = check_in_range("beta", beta, 0.0, 1.0)
        self.gamma = check_non_negative("gamma", gamma)
        self.init_std = check_non_negative("init_std", init_std)
        self.free = nn.Parameter(torch.empty(size, size))
        self.register_buffer("identity", torch.eye(size), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.free.normal_(0.0, self.init_std / self.size)

    def forward(self) -> torch.Tensor:
        free = self.free
        transposed = free.transpose(0, 1)
        return (
            (1.0 - self.beta) * (free + transposed)
            + self.beta * (free - transposed)
            - self.gamma * self.identity
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, beta={self.beta}, gamma={self.gamma}, init_std={self.init_std}"
