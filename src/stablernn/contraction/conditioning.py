"""Well-conditioned diagonal metrics for Hurwitz Metzler comparison matrices.

The closed form ``P = diag(eta / xi)`` with ``xi = -A^{-1} 1``, ``eta = -A^{-T} 1`` is valid
but, for sparse matrices with long chains, its entries can span many orders of magnitude
(1e3 to 1e20 seen for 32-unit Sparse Combo Net subnetworks). A metric's condition number
enters the feedback ``L = B - M^{-1} B^T M`` of paper 000 eq. 3 and every Euler step bound, so
the best-conditioned valid metric is wanted, not only a valid one.

The same proof works for any positive vectors: with ``xi = -A^{-1} u`` and ``eta = -A^{-T} v``
(u, v > 0) and ``P = diag(eta / xi)``, ``diag(xi) (P A + A^T P) diag(xi)`` is a symmetric
Metzler matrix whose rows sum to ``-(eta * u + xi * v) < 0``, hence negative definite. Choosing
``u = max(-A 1, delta)`` and ``v = max(-A^T 1, delta)`` gives ``xi = eta = 1`` (P = I) whenever
A is diagonally dominant, and keeps P close to I otherwise.
"""

from __future__ import annotations

import numpy as np

from stablernn.contraction._inputs import as_matrix
from stablernn.contraction.metrics import MetricError, is_metzler, normalized_lyapunov_value

FLOOR = 0.05  # delta: the smallest right-hand side used for the balanced vectors


def _closed_form(a: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    try:
        xi = -np.linalg.solve(a, u)
        eta = -np.linalg.solve(a.T, v)
    except np.linalg.LinAlgError:
        return None
    if not ((xi > 0).all() and (eta > 0).all() and np.isfinite(xi).all() and np.isfinite(eta).all()):
        return None
    p = eta / xi
    return p / p.max()


def well_conditioned_diagonal_metric(comparison) -> np.ndarray:
    """The best-conditioned of several verified diagonal metrics for a Hurwitz Metzler matrix.

    Candidates: the identity, the balanced closed form (module docstring) and the plain closed
    form; each is kept only if ``P A + A^T P < 0`` checks numerically. Returns the diagonal
    matrix with largest entry 1; raises :class:`MetricError` when none verifies.
    """
    a = as_matrix("A", comparison)
    if not is_metzler(a):
        raise ValueError("A must be Metzler (off-diagonal entries >= 0)")
    n = a.shape[0]
    ones = np.ones(n)
    candidates = [ones,
                  _closed_form(a, np.maximum(-a @ ones, FLOOR), np.maximum(-a.T @ ones, FLOOR)),
                  _closed_form(a, ones, ones)]
    best = None
    for p in candidates:
        if p is None:
            continue
        metric = np.diag(p)
        if normalized_lyapunov_value(metric, a) < -1e-12:
            condition = p.max() / p.min()
            if best is None or condition < best[0]:
                best = (condition, metric)
    if best is None:
        raise MetricError("no diagonal metric verified: A is not Hurwitz or too ill-conditioned")
    return best[1]
