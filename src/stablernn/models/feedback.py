"""Stability-preserving negative feedback between parts (paper 000 eq. 3, Corollaries 1-2)."""

from __future__ import annotations

import torch
from torch import nn

from stablernn._checks import check_choice, check_number

MASKS = ("lower", "off-diagonal", "full")


def block_mask(sizes: list[int], mask: str) -> torch.Tensor:
    """0/1 mask over the blocks of B: ``lower`` keeps blocks (i, j) with i > j (paper 000,
    D.1.1), ``off-diagonal`` every i != j, ``full`` everything."""
    check_choice("mask", mask, MASKS)
    total = sum(sizes)
    keep = torch.zeros(total, total)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for i, (row, rows) in enumerate(zip(starts, sizes)):
        for j, (col, cols) in enumerate(zip(starts, sizes)):
            if mask == "full" or (mask == "off-diagonal" and i != j) or (mask == "lower" and i > j):
                keep[row:row + rows, col:col + cols] = 1.0
    return keep


def sparse_pattern(size: int, density: float, seed: int | None) -> torch.Tensor:
    """A fixed 0/1 pattern keeping each entry of B with probability ``density`` (paper 000
    section 4.2.2's pilot of sparse feedback, D.2.4), drawn from ``seed`` (torch's generator
    when ``None``)."""
    density = check_number("feedback_density", density, 0, 1, open_low=True)
    if density == 1.0:
        return torch.ones(size, size)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return (torch.rand(size, size, generator=generator) < density).float()


class NegativeFeedback(nn.Module):
    r"""The feedback matrix ``L = B - M^{-1} B^T M - M^{-1} C`` between parts.

    Paper 000 eq. 3 blockwise, ``L_ij = B_ij - M_i^{-1} B_ji^T M_j``, with M the block-diagonal
    metric of the assembly (each part's metric times its weight k_i, Corollary 1). Then
    ``M L + L^T M = -(C + C^T) <= 0`` (Corollary 2), so the feedback never weakens contraction.
    B is trained through a fixed block ``mask``; the optional damping ``C = F F^T`` is positive
    semidefinite. ``unconstrained=True`` sets ``L = B`` (the paper's control experiment, no
    guarantee; such an assembly certifies as not contracting). ``density < 1`` keeps a fixed
    random fraction of the mask's entries (drawn from ``seed``): L stays skew in the metric, so
    the guarantee is unchanged.
    """

    def __init__(self, sizes: list[int], mask: str = "lower", damping: bool = False,
                 unconstrained: bool = False, init_std: float = 0.0, density: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__()
        total = sum(sizes)
        self.mask_name = mask
        self.density = density
        self.register_buffer("mask", block_mask(sizes, mask) * sparse_pattern(total, density, seed))
        self.coupling = nn.Parameter(torch.randn(total, total) * init_std)
        self.unconstrained = bool(unconstrained)
        self.damping_factor = nn.Parameter(torch.zeros(total, total)) if damping else None

    def in_metric(self, root: torch.Tensor, root_inverse: torch.Tensor) -> torch.Tensor:
        r"""``S L S^{-1}`` for ``M = S^2``, built skew-symmetric to the last bit (plus the damping).

        ``S L S^{-1} = C - C^T - S^{-1} F F^T S^{-1}`` with ``C = S B S^{-1}``: the difference
        ``C - C^T`` is exactly antisymmetric in floating point however ill-conditioned M is,
        so its Cayley transform is orthogonal to rounding (the splitting step's feedback).
        ``unconstrained``: ``S B S^{-1}``.
        """
        coupling = root @ (self.coupling * self.mask) @ root_inverse
        if self.unconstrained:
            return coupling
        feedback = coupling - coupling.transpose(0, 1)
        if self.damping_factor is not None:
            factor = root_inverse @ self.damping_factor
            feedback = feedback - factor @ factor.transpose(0, 1)
        return feedback

    def forward(self, metric: torch.Tensor, metric_inverse: torch.Tensor) -> torch.Tensor:
        coupling = self.coupling * self.mask
        if self.unconstrained:
            return coupling
        feedback = coupling - metric_inverse @ coupling.transpose(0, 1) @ metric
        if self.damping_factor is not None:
            damping = self.damping_factor @ self.damping_factor.transpose(0, 1)
            feedback = feedback - metric_inverse @ damping
        return feedback

    def parameter_masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """B is trained only where the mask keeps it (see ``count_trained_parameters``)."""
        return [(self.coupling, self.mask)]

    def extra_repr(self) -> str:
        return (f"mask={self.mask_name!r}, density={self.density:g}, "
                f"damping={self.damping_factor is not None}, unconstrained={self.unconstrained}")
