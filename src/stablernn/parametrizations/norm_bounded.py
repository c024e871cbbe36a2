"""A matrix with a spectral-norm bound that holds for every parameter value."""

from __future__ import annotations

import torch
from torch import nn

from stablernn._checks import check_positive


class NormBounded(nn.Module):
    r"""``W = w_max V / max(1, ||V||_2)`` for the matrix ``V`` that ``inner()`` builds.

    Then ``||W||_2 <= w_max`` for every parameter value (exactly, up to the rounding of one
    division), and ``W = w_max V`` while ``||V||_2 <= 1``. ``||V||_2`` is computed exactly (an
    SVD) once per forward pass; its gradient flows where the bound is active.
    The inner parametrization's attributes (``free``, ``beta``, ``gamma``) stay reachable.
    """

    def __init__(self, inner: nn.Module, max_norm: float) -> None:
        super().__init__()
        self.inner = inner
        self.max_norm = check_positive("max_norm", max_norm)

    def forward(self) -> torch.Tensor:
        matrix = self.inner()
        norm = torch.linalg.matrix_norm(matrix, ord=2)
        return matrix * (self.max_norm / torch.clamp(norm, min=1.0))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm:.6g}"
