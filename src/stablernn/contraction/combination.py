"""Contraction of combinations: feedback (paper 000 eq. 3, Corollaries 1-2) and hierarchy
(appendix A.2.1), as numerical checks on the built matrices."""

from __future__ import annotations

import numpy as np


def feedback_defect(metric: np.ndarray, feedback: np.ndarray) -> float:
    """``lambda_max(sym(M L))`` scaled by ``||M|| ||L||``: <= ~1e-6 means ``M L + L^T M <= 0``.

    Corollary 1 needs ``M L + L^T M <= 0`` for the block-diagonal metric M of the assembly; with
    ``L = B - M^{-1} B^T M - M^{-1} C`` it equals ``-(C + C^T)`` exactly, so in floating point
    the largest eigenvalue is a rounding residue when the construction is right, and of the order
    of ``||M|| ||L||`` when it is not (e.g. ``L = B``).
    """
    product = metric @ feedback
    largest = float(np.linalg.eigvalsh(0.5 * (product + product.T)).max())
    scale = float(np.linalg.norm(metric, 2) * np.linalg.norm(feedback, 2)) or 1.0
    return largest / scale


def hierarchy_rate(rates: np.ndarray, gains: np.ndarray, weights: np.ndarray) -> float:
    r"""Rate of parts coupled by bounded hierarchical maps (small-gain comparison).

    Part i contracts at ``rates[i]`` in metric ``M_i``; ``gains[i, j]`` bounds
    ``||M_i^{1/2} G_ij M_j^{-1/2}||`` for the Jacobian ``G_ij`` of the map from part j into
    part i (zero where none). With ``V = sum_i k_i |M_i^{1/2} dx_i|^2`` (the feedback L is
    skew in this metric and drops out):

        dV/dt / 2 <= -v^T S v,   S_ii = k_i rate_i,   S_ij = -(k_i gains_ij + k_j gains_ji) / 2

    for ``v_i = |M_i^{1/2} dx_i|``, so V shrinks like ``exp(-2 rho t)`` with
    ``rho = lambda_min(K^{-1/2} S K^{-1/2})``. Returns rho (not contracting when <= 0).
    """
    rates, gains, weights = map(np.asarray, (rates, gains, weights))
    coupling = weights[:, None] * gains
    comparison = np.diag(weights * rates) - 0.5 * (coupling + coupling.T)
    scaling = 1.0 / np.sqrt(weights)
    return float(np.linalg.eigvalsh(scaling[:, None] * comparison * scaling[None, :]).min())


def hierarchy_weights(rates: np.ndarray, gains: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Weights k for a strictly feed-forward hierarchy: the rate reaches ``fraction`` of the
    slowest part's rate with weights as close to 1 as possible.

    For a cascade a later part can always be weighted down until the coupling is dominated
    (paper 000, appendix A.2.1), but extreme weights make the metric ill-conditioned (and the
    Euler step bound tiny), so the spread of log k is penalized: scipy's Nelder-Mead minimizes
    ``-min(rho(k), target) + 1e-4 |log k|^2`` from ``k = 1``.
    """
    from scipy.optimize import minimize

    rates, gains = np.asarray(rates, float), np.asarray(gains, float)
    if not gains.any():
        return np.ones(len(rates))
    target = fraction * float(rates.min())

    def objective(log_k):
        return -min(hierarchy_rate(rates, gains, np.exp(log_k)), target) + 1e-4 * log_k @ log_k

    result = minimize(objective, np.zeros(len(rates)), method="Nelder-Mead",
                      options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 20000})
    return np.exp(result.x - result.x.max())
