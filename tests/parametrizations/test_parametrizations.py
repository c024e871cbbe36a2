"""Parametrizations: free parameters -> structured matrices (paper 002, eq. 6, Proposition 1;
the norm bound of the contracting Lipschitz RNN)."""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from stablernn.parametrizations import NormBounded, SymmetricSkew


@given(
    size=st.integers(2, 12),
    beta=st.floats(0.0, 1.0),
    gamma=st.floats(0.0, 2.0),
    scale=st.floats(0.01, 3.0),
    seed=st.integers(0, 10_000),
)
def test_proposition_1_spectrum_interval(size, beta, gamma, scale, seed):
    """Paper 002, Proposition 1 (with the factor 2 its proof drops; see SymmetricSkew)."""
    generator = torch.Generator().manual_seed(seed)
    param = SymmetricSkew(size, beta, gamma).double()
    with torch.no_grad():
        param.free.copy_(scale * torch.randn(size, size, generator=generator, dtype=torch.float64))
    S = param().detach().numpy()
    M = param.free.detach().numpy()
    m_sym = np.linalg.eigvalsh((M + M.T) / 2)
    low = 2 * (1 - beta) * m_sym[0] - gamma
    high = 2 * (1 - beta) * m_sym[-1] - gamma
    tolerance = 1e-9 * (1 + abs(low) + abs(high))
    real_parts = np.linalg.eigvals(S).real
    sym_eigs = np.linalg.eigvalsh((S + S.T) / 2)
    assert real_parts.min() >= low - tolerance and real_parts.max() <= high + tolerance
    assert sym_eigs.min() >= low - tolerance and sym_eigs.max() <= high + tolerance


def test_proposition_1_as_printed_misses_factor_two():
    """The printed interval [(1-beta) l_min - gamma, (1-beta) l_max - gamma] fails for M = I."""
    param = SymmetricSkew(3, beta=0.0, gamma=0.0).double()
    with torch.no_grad():
        param.free.copy_(torch.eye(3, dtype=torch.float64))
    eigenvalues = np.linalg.eigvals(param().detach().numpy()).real
    assert np.allclose(eigenvalues, 2.0)  # printed interval is the single point {1}


@given(size=st.integers(1, 10), bound=st.floats(0.01, 5.0), scale=st.floats(0.01, 10.0),
       seed=st.integers(0, 10_000))
def test_norm_bounded_never_exceeds_its_bound_and_keeps_small_matrices(size, bound, scale, seed):
    """``W = w_max V / max(1, ||V||_2)``: spectral norm <= w_max for every free value."""
    generator = torch.Generator().manual_seed(seed)
    inner = SymmetricSkew(size, 0.5, 0.0).double()
    with torch.no_grad():
        inner.free.copy_(scale * torch.randn(size, size, generator=generator,
                                             dtype=torch.float64))
    bounded = NormBounded(inner, bound)
    matrix = bounded().detach()
    norm = torch.linalg.matrix_norm(matrix, ord=2).item()
    assert norm <= bound * (1 + 1e-12)
    inner_norm = torch.linalg.matrix_norm(inner().detach(), ord=2).item()
    if inner_norm <= 1:
        torch.testing.assert_close(matrix, bound * inner().detach())
