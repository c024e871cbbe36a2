r"""Discrete time: when is the Euler (or RK2) map of a contracting flow itself contracting?

The papers certify the continuous-time system; every trained model runs a discretized map.
For the Euler map ``x+ = x + h f(x)`` the Jacobian is ``I + h J``, and the map contracts in
the metric M with factor ``rho`` when ``||I + h J||_M <= rho < 1`` for every J of the family,
where ``||X||_M = ||S X S^{-1}||_2`` for ``M = S^2``. This is the discrete condition of
paper 000, section A.2, with a constant metric:

    (I + hJ)^T M (I + hJ) - M <= (rho^2 - 1) M < 0.

**Exact step (vertex enumeration).** With ``F = S J S^{-1}`` and ``N = -2 sym F``:
``||I + hF||^2 < 1  <=>  h (F + F^T) + h^2 F^T F < 0  <=>  h F^T F < N`` (h > 0), so for one J
the largest step is ``h*(J) = 1 / lambda_max(N^{-1/2} F^T F N^{-1/2})`` (0 when N is not
positive definite). For a fixed h, ``||I + hF(d)||`` is convex in the slopes d, so it is below 1
on the whole slope box iff it is at the vertices: ``max_euler_step = min_vertices h*(J_v)``.

**Bound (large N).** With a certified rate lambda (``sym F <= -lambda I``) and
``K >= sup ||F||`` (:func:`stablernn.contraction.verification.family_norm_bound`):

    ||I + hF||^2 = lambda_max(I + 2h sym F + h^2 F^T F) <= 1 - 2 h lambda + h^2 K^2,

which is < 1 for ``0 < h < 2 lambda / K^2``: the sound bound ``max_euler_step >= 2 lambda / K^2``.

**RK2 (explicit midpoint, input held over the step).** Its Jacobian is
``I + h J_2 (I + h/2 J_1)`` with J_1, J_2 taken at two different points (two independent
members of the family), so ``||.||_M <= sup ||I + hF|| + h^2 K^2 / 2``; the largest h making
this < 1 is found by bisection (the bound is convex in h and equals 1 at h = 0).

Assumption in all cases: the family contains every Jacobian along the discrete trajectories
(true for eq. 1 of either paper, whose Jacobians depend on the state only through the slopes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stablernn._checks import check_positive
from stablernn.contraction._inputs import check_metric, rounding
from stablernn.contraction.family import JacobianFamily
from stablernn.contraction.verification import (
    DEFAULT_MAX_VERTICES,
    _Transformed,
    _vertex_chunks,
    check_family_metric,
    family_norm_bound,
)


@dataclass(frozen=True)
class StepBound:
    """Largest step for which the discrete map contracts in the metric.

    Every step in ``(0, max_step)`` gives a contraction; ``exact`` says whether
    ``max_step`` is the exact supremum for the family (vertex enumeration) or a lower bound.
    """

    max_step: float
    exact: bool
    method: str


@dataclass(frozen=True)
class DiscreteCheck:
    """Contraction factor of a discrete map: ``J^T M J <= factor^2 M`` for every Jacobian.

    ``holds`` is ``factor < 1`` (paper 000, section A.2 with a constant metric and
    ``beta = 1 - factor^2``). ``exact`` says whether the factor is the exact worst case.
    """

    holds: bool
    factor: float
    exact: bool
    method: str

    @property
    def rate_per_step(self) -> float:
        """``-log(factor)``: distances shrink at least like ``factor^k`` after k steps."""
        return math.inf if self.factor == 0 else -math.log(self.factor)


def _vertex_count_ok(family: JacobianFamily, max_vertices: int) -> bool:
    return family.slopes <= 62 and (1 << family.slopes) <= max_vertices


def max_euler_step(
    family: JacobianFamily, metric, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> StepBound:
    """Largest Euler step h with ``||I + h J||_M < 1`` for every J in the family.

    Exact (``min_v 1 / lambda_max(N_v^{-1/2} F_v^T F_v N_v^{-1/2})`` over the slope vertices)
    when ``2^K <= max_vertices``; otherwise the sound bound ``2 lambda / K^2`` from the
    certified rate lambda and the norm bound K. Zero when the metric does not certify
    continuous-time contraction (no small step can then be guaranteed either).
    """
    metric = check_metric("metric", metric, family.size)
    if _vertex_count_ok(family, max_vertices):
        t = _Transformed(family, metric)
        best = math.inf
        for vertices in _vertex_chunks(family.slopes, family.low, family.high, family.size):
            f = t.generalized(vertices)
            negative = -(f + f.swapaxes(1, 2))
            try:
                lower = np.linalg.cholesky(negative)
            except np.linalg.LinAlgError:
                return StepBound(0.0, True, "exact: a vertex Jacobian has mu_M(J) >= 0")
            x = np.linalg.solve(lower, f.swapaxes(1, 2))  # L^{-1} F^T
            gram = x @ x.swapaxes(1, 2)  # L^{-1} F^T F L^{-T}
            largest = np.linalg.eigvalsh(gram)[:, -1]
            best = min(best, float((1.0 / largest).min()))
        return StepBound(best * (1 - 1e-9), True, f"exact over {1 << family.slopes} slope vertices")
    check = check_family_metric(family, metric, max_vertices=max_vertices)
    if not check.contracting:
        return StepBound(0.0, False, "the metric does not certify continuous-time contraction")
    norm, _ = family_norm_bound(family, metric, max_vertices=max_vertices)
    quadratic, midpoint = 2 * check.rate / norm**2, midpoint_euler_step(family, metric)
    if midpoint > quadratic:
        return StepBound(midpoint, False, "bound ||I + h F(c)|| + h r P < 1 (midpoint)")
    return StepBound(quadratic, False, f"bound 2 rate / K^2 (rate by {check.method})")


def midpoint_euler_step(family: JacobianFamily, metric, *, iterations: int = 40) -> float:
    """Largest h (bisection, a lower bound) with ``||I + h F(c)|| + h r P < 1``.

    ``F(c)`` is the generalized Jacobian at the slope midpoint, r the slope radius and P the
    perturbation norm: every ``||I + h F(d)||`` is at most that sum, which is convex in h and 0
    at h = 0 below 1, so the steps it certifies form an interval. Often far less conservative
    than ``2 lambda / K^2``, which bounds ``F^T F`` by the worst norm of the whole family.
    """
    metric = check_metric("metric", metric, family.size)
    t = _Transformed(family, metric)
    center, radius = 0.5 * (family.low + family.high), 0.5 * (family.high - family.low)
    f = t.generalized(np.full(family.slopes, center))
    symmetric, gram = f + f.T, f.T @ f
    perturbation = radius * t.perturbation_norm()
    identity = np.eye(family.size)

    def excess(h: float) -> float:
        top = float(np.linalg.eigvalsh(identity + h * symmetric + h * h * gram)[-1])
        return math.sqrt(max(top, 0.0)) * (1 + rounding()) + h * perturbation - 1.0

    low, high = 0.0, 1.0
    while excess(high) < 0 and high < 1e6:
        low, high = high, 2 * high
    if low == 0.0 and excess(high * 1e-6) >= 0:
        return 0.0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if excess(middle) < 0 else (low, middle)
    return low


def euler_contraction_factor(
    family: JacobianFamily, metric, step: float, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> DiscreteCheck:
    """``sup_d ||I + h J(d)||_M`` for the Euler map with step h (exact or an upper bound).

    Exact over the slope vertices when ``2^K <= max_vertices`` (the norm is convex in d);
    otherwise ``min(sqrt(1 - 2 h lambda + h^2 K^2), ||I + h F(c)|| + h r P)`` with lambda the
    certified rate (possibly negative), K the norm bound, c/r the slope midpoint/radius and
    P the perturbation norm.
    """
    h = check_positive("step", step)
    metric = check_metric("metric", metric, family.size)
    t = _Transformed(family, metric)
    identity = np.eye(family.size)
    if _vertex_count_ok(family, max_vertices):
        worst = 0.0
        for vertices in _vertex_chunks(family.slopes, family.low, family.high, family.size):
            norms = np.linalg.norm(identity + h * t.generalized(vertices), 2, axis=(1, 2))
            worst = max(worst, float(norms.max()))
        factor = worst * (1 + rounding())
        return DiscreteCheck(factor < 1, factor, True, "exact over the slope vertices")
    check = check_family_metric(family, metric, max_vertices=max_vertices)
    norm, _ = family_norm_bound(family, metric, max_vertices=max_vertices)
    quadratic = math.sqrt(max(0.0, 1 - 2 * h * check.rate + h * h * norm * norm))
    center, radius = 0.5 * (family.low + family.high), 0.5 * (family.high - family.low)
    f_center = t.generalized(np.full(family.slopes, center))
    triangle = float(np.linalg.norm(identity + h * f_center, 2)) + h * radius * t.perturbation_norm()
    factor = min(quadratic, triangle) * (1 + rounding())
    return DiscreteCheck(factor < 1, factor, False, "bound (rate and norm bound, or midpoint)")


def rk2_contraction_factor(
    family: JacobianFamily, metric, step: float, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> DiscreteCheck:
    """Bound on ``||I + h J_2 (I + h/2 J_1)||_M`` over independent J_1, J_2 of the family.

    ``<= sup ||I + h F|| + h^2 K^2 / 2`` (triangle inequality and submultiplicativity), with
    the Euler factor from :func:`euler_contraction_factor`. Always a bound (never exact).
    """
    h = check_positive("step", step)
    euler = euler_contraction_factor(family, metric, h, max_vertices=max_vertices)
    norm, _ = family_norm_bound(family, metric, max_vertices=max_vertices)
    factor = euler.factor + 0.5 * h * h * norm * norm
    return DiscreteCheck(factor < 1, factor, False, "bound: Euler factor + h^2 K^2 / 2")


def max_rk2_step(
    family: JacobianFamily, metric, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> StepBound:
    """Largest h (found by bisection, a lower bound) with the RK2 factor bound < 1."""
    euler = max_euler_step(family, metric, max_vertices=max_vertices)
    if euler.max_step <= 0:
        return StepBound(0.0, False, "the Euler bound is already 0")
    low, high = 0.0, euler.max_step
    for _ in range(40):
        middle = 0.5 * (low + high)
        if rk2_contraction_factor(family, metric, middle, max_vertices=max_vertices).holds:
            low = middle
        else:
            high = middle
    return StepBound(low, False, "bisection on the RK2 bound")


def discrete_map_factor(
    family: JacobianFamily, metric, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> DiscreteCheck:
    """Paper 000, section A.2 for a discrete-time map whose Jacobians form ``family``.

    Checks ``J^T M J - M < 0`` for every J (constant metric) through
    ``factor = sup_J ||J||_M``: ``J^T M J - M <= (factor^2 - 1) M``. Exact over the slope
    vertices when ``2^K <= max_vertices`` (``||J(d)||_M`` is convex in d), otherwise the
    midpoint bound. For the discrete-time RNN ``x+ = W phi(x) + u``
    (:func:`stablernn.contraction.family.discrete_rnn_family`) with a diagonal metric P this
    is exactly the condition ``g^2 W^T P W - P < 0`` of paper 000, Theorem 5 (checked at the
    vertex ``D = g I``, which is the worst one there).
    """
    metric = check_metric("metric", metric, family.size)
    factor, exact = family_norm_bound(family, metric, max_vertices=max_vertices)
    method = "exact over the slope vertices" if exact else "midpoint bound"
    return DiscreteCheck(factor < 1, factor, exact, method)
