r"""Contraction of the map that runs: one step of the discretized model, in float32.

The papers certify the flow ``x' = f(x)``; a model runs a map ``x_{t+1} = step(x_t, u_t)``. The
map contracts in the metric ``M = S^2`` with factor ``rho`` when every Jacobian of one step
satisfies ``J^T M J <= rho^2 M``, i.e. ``||S J S^{-1}||_2 <= rho`` (paper 000, section A.2 with a
constant metric). Every model here has one-step Jacobians of the form

    J(D) = T + h X(D),      X(D) = D W  (Lipschitz RNN)   or   W D  (rate subnetworks),

with a constant ``T`` (the transition: ``I + h A`` for Euler, ``exp(h A)`` for the exponential
step, ``(1 - h) I`` for a part's Euler step) and slopes ``D = diag(d)``, ``0 <= d <= g``.
For a **diagonal** metric D commutes with S, so with ``T_M = S T S^{-1}``, ``W_M = S W S^{-1}``:

- *triangle*: ``||J||_M <= ||T_M|| + h g ||W_M||``;
- *midpoint*: ``D = (g/2) I + E`` with ``||E|| <= g/2``:
  ``||J||_M <= ||T_M + h (g/2) W_M|| + h (g/2) ||W_M||``;
- *comparison* (T diagonal and nonnegative, ``h`` small enough that it is): the weighted
  2-norm is monotone in absolute values, so ``||J||_M <= || T + h g |W| ||_M`` (the discrete
  form of paper 000, Theorem 1's argument).

``||J(D)||_M`` is convex in d, so for ``N <= 12`` the maximum over the ``2^N`` vertices is the
exact worst case. The smallest of the applicable values is the factor.

**Float32 as it runs.** The factor is computed in float64 from the matrices the model holds, so
it bounds the exact one-step map of those parameters. The model evaluates that map in float32
(and rebuilds ``T`` from its parameters each pass); :func:`float32_allowance` adds a rounding
allowance ``4 sqrt(N) eps_32 (|| |T_M| || + h g || |W_M| ||)`` (times ``sqrt(cond M)`` for a full
metric) to the factor, so the reported factor pays for that arithmetic rather than resting on
it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)
EXACT_VERTEX_LIMIT = 12


@dataclass(frozen=True)
class StepFactor:
    """``factor``: a sound upper bound on ``sup_D ||J_step(D)||_M`` including the float32
    allowance; ``method``: which bound gave it; ``exact``: the bound before the allowance is the
    exact worst case (vertex enumeration)."""

    factor: float
    method: str
    exact: bool = False

    @property
    def contracting(self) -> bool:
        return bool(math.isfinite(self.factor) and self.factor < 1.0)

    @property
    def rate_per_step(self) -> float:
        """``-log(factor)``: distances in the metric shrink at least like ``factor^k``."""
        if not self.factor > 0:
            return math.inf
        return -math.log(self.factor)


def is_diagonal(matrix: np.ndarray) -> bool:
    return bool(np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0)


def _spectral(matrix: np.ndarray) -> float:
    return float(np.linalg.norm(matrix, 2))


def metric_root(metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(S, S^{-1})`` with ``M = S^2`` (symmetric square root)."""
    metric = 0.5 * (metric + metric.T)
    if is_diagonal(metric):
        root = np.sqrt(np.diag(metric))
        return np.diag(root), np.diag(1.0 / root)
    values, vectors = np.linalg.eigh(metric)
    if values[0] <= 0:
        raise ValueError(f"metric must be positive definite, smallest eigenvalue {values[0]:.3g}")
    return (vectors * np.sqrt(values)) @ vectors.T, (vectors / np.sqrt(values)) @ vectors.T


def metric_norm(matrix: np.ndarray, metric: np.ndarray | None = None) -> float:
    """``||X||_M = ||S X S^{-1}||_2`` (the plain spectral norm when ``metric`` is None)."""
    if metric is None:
        return _spectral(matrix)
    root, inverse = metric_root(metric)
    return _spectral(root @ matrix @ inverse)


def float32_allowance(size: int, scale: float, metric: np.ndarray | None = None) -> float:
    """Rounding allowance ``4 sqrt(N) eps_32 scale`` for one step in float32, where ``scale``
    bounds ``|| |S J S^{-1}| ||_2`` (absolute values of the Jacobian's terms in the metric).

    A Jacobian computed in float32 (autograd of the step, or the matrices rebuilt from the
    parameters) differs from the exact one entrywise by a few ulps, which is at most
    ``4 eps_32 || |J_M| ||``; the factor ``sqrt(N)`` adds the typical accumulation of an
    N-term product, so that float32 trajectories that are not within rounding of each other
    also shrink by the factor. Entrywise errors are rescaled with the entries by a diagonal
    metric; a full metric multiplies them by ``sqrt(cond M)`` (pass it as ``metric``)."""
    condition = 1.0
    if metric is not None and not is_diagonal(metric):
        values = np.linalg.eigvalsh(0.5 * (metric + metric.T))
        condition = float(values[-1] / values[0])
    return 4.0 * math.sqrt(size) * FLOAT32_EPS * scale * math.sqrt(condition)


def absolute_norm(matrix: np.ndarray, metric: np.ndarray | None = None) -> float:
    """``|| |S X S^{-1}| ||_2`` for a diagonal metric (S X S^{-1} itself otherwise)."""
    if metric is None:
        return _spectral(np.abs(matrix))
    if is_diagonal(metric):
        root = np.sqrt(np.diag(metric))
        return _spectral(np.abs(root[:, None] * matrix / root[None, :]))
    return metric_norm(matrix, metric)


def step_factor(transition, weight, step_size: float, slope_bound: float = 1.0, *,
                side: str = "left", metric=None) -> StepFactor:
    """Bound on ``sup_D ||T + h X(D)||_M`` with ``X(D) = D W`` (``side="left"``) or ``W D``
    (``side="right"``), slopes in ``[0, g]``, a diagonal metric (identity when None).

    The smallest of the triangle, midpoint, comparison and (N <= 12) exact vertex values, plus
    :func:`float32_allowance`. ``T``, ``W`` and M are float64 arrays of the running matrices.
    """
    transition = np.asarray(transition, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    size = transition.shape[0]
    if metric is not None:
        metric = np.asarray(metric, dtype=np.float64)
        if not is_diagonal(metric):
            raise ValueError("step_factor needs a diagonal metric (slopes commute with it)")
    if not (np.isfinite(transition).all() and np.isfinite(weight).all()):
        return StepFactor(math.inf, "non-finite matrices")
    scale = np.ones(size) if metric is None else np.sqrt(np.diag(metric))
    t_m = scale[:, None] * transition / scale[None, :]
    w_m = scale[:, None] * weight / scale[None, :]
    h, g = float(step_size), float(slope_bound)
    w_norm = _spectral(w_m)
    candidates = {
        "triangle ||T|| + h g ||W||": _spectral(t_m) + h * g * w_norm,
        "midpoint ||T + h g W / 2|| + h g ||W|| / 2": _spectral(t_m + 0.5 * h * g * w_m) + 0.5 * h * g * w_norm,
    }
    if is_diagonal(transition) and (np.diag(transition) >= 0).all():
        candidates["comparison ||T + h g |W| ||"] = _spectral(
            t_m + h * g * np.abs(w_m))
    exact = size <= EXACT_VERTEX_LIMIT
    if exact:
        worst = 0.0
        for vertex in itertools.product((0.0, g), repeat=size):
            slopes = np.array(vertex)
            x = slopes[:, None] * w_m if side == "left" else w_m * slopes[None, :]
            worst = max(worst, _spectral(t_m + h * x))
        candidates["exact over the slope vertices"] = worst
    method = min(candidates, key=candidates.get)
    allowance = float32_allowance(size, _spectral(np.abs(t_m)) + h * g * _spectral(np.abs(w_m)))
    return StepFactor(candidates[method] + allowance, method, exact and method.startswith("exact"))


def sampled_step_factor(jacobians: np.ndarray, metric=None) -> float:
    """The worst ``||J||_M`` over a stack of sampled one-step Jacobians ``(K, N, N)``."""
    jacobians = np.asarray(jacobians, dtype=np.float64)
    if metric is None:
        return float(np.linalg.norm(jacobians, 2, axis=(1, 2)).max())
    root, inverse = metric_root(np.asarray(metric, dtype=np.float64))
    return float(np.linalg.norm(root @ jacobians @ inverse, 2, axis=(1, 2)).max())


def scaled_diagonal_metric(nonnegative, target: float) -> tuple[np.ndarray, float]:
    r"""A diagonal metric P making ``||N||_P`` small for a nonnegative matrix N, and that norm.

    Schur's test: for positive x, y with ``N x <= a x`` and ``N^T y <= b y``, the scaling
    ``P = diag(y / x)`` gives ``||N||_P <= sqrt(a b)``; the Perron vectors of
    ``N + delta 1 1^T / n`` give ``a = b = rho(N + delta 1 1^T / n) -> rho(N)`` as delta -> 0,
    but the metric's condition number grows. Tries the identity, then delta from 1 down to
    1e-6 (relative to the scale of N), and keeps the first (best-conditioned) metric whose norm
    is at most ``target``; if none reaches it, the one with the smallest norm. The norm is
    computed, not assumed. Returns ``(P normalised to max 1, ||N||_P)``.
    """
    matrix = np.asarray(nonnegative, dtype=np.float64)
    if (matrix < 0).any():
        raise ValueError("scaled_diagonal_metric needs a nonnegative matrix")
    size = matrix.shape[0]
    best = (np.ones(size), _spectral(matrix))
    if best[1] <= target:
        return np.diag(best[0]), best[1]
    scale = max(float(matrix.max()), 1e-300)
    for delta in 10.0 ** -np.arange(0.0, 6.5, 0.5):
        perturbed = matrix + delta * scale * np.ones((size, size)) / size
        values, right = np.linalg.eig(perturbed)
        left_values, left = np.linalg.eig(perturbed.T)
        x = np.abs(right[:, np.argmax(values.real)].real)
        y = np.abs(left[:, np.argmax(left_values.real)].real)
        if not (x.min() > 0 and y.min() > 0):
            continue
        weights = y / x
        root = np.sqrt(weights)
        norm = _spectral(root[:, None] * matrix / root[None, :])
        if norm < best[1]:
            best = (weights, norm)
        if norm <= target:
            break
    weights, norm = best
    return np.diag(weights / weights.max()), norm
