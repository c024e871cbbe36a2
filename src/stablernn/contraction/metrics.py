r"""Metrics: Lyapunov solves, closed-form diagonal metrics, diagonal scalings.

- :func:`lyapunov_metric`: ``M A + A^T M = -Q`` with :func:`scipy.linalg.solve_continuous_lyapunov`
  (the paper integrated matrix exponentials with ``scipy.integrate.quad``, paper 000, D.1.1).
- :func:`metzler_diagonal_metric`: for a Hurwitz Metzler A, ``xi = -A^{-1} 1``,
  ``eta = -A^{-T} 1``, ``P = diag(eta_i / xi_i)``; then ``P A + A^T P < 0``.
- :func:`diagonal_norm_metric`: a positive diagonal P with ``g^2 W^T P W - P < 0``
  (paper 000, Theorem 5), i.e. ``g ||P^{1/2} W P^{-1/2}||_2 < 1``.

Every metric is verified numerically before it is returned; a failure raises
:class:`MetricError` (a ``ValueError``) or is reported in the result, never silently passed on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from stablernn._checks import check_positive
from stablernn.contraction._inputs import as_matrix, rounding, sym


class MetricError(ValueError):
    """No metric with the required property could be built or verified."""


def spectral_abscissa(matrix: np.ndarray) -> float:
    """Largest real part of the eigenvalues."""
    return float(np.linalg.eigvals(matrix).real.max())


def normalized_lyapunov_value(metric: np.ndarray, matrix: np.ndarray) -> float:
    """``lambda_max(M^{-1/2} (M A + A^T M) M^{-1/2}) / 2``, i.e. the log-norm ``mu_M(A)``.

    ``M A + A^T M <= -2 lambda M`` holds exactly for ``lambda <= -mu_M(A)``.
    """
    values, vectors = np.linalg.eigh(sym(metric))
    root = (vectors * np.sqrt(values)) @ vectors.T
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    generalized = root @ matrix @ inverse_root
    return float(np.linalg.eigvalsh(sym(generalized))[-1])


def lyapunov_metric(a, q=None) -> np.ndarray:
    """Solve ``M A + A^T M = -Q`` for M (Q = I by default) and verify it.

    A must be Hurwitz (then M is the unique solution and is positive definite for Q > 0;
    paper 000, section 4.1: "solving for M in -I = MA + A^T M will produce a valid metric for
    any stable LTI system"). Uses :func:`scipy.linalg.solve_continuous_lyapunov`, which solves
    ``a X + X a^H = q``; here ``a = A^T`` and ``q = -Q``.

    Raises:
        ValueError: A or Q malformed, Q not positive definite.
        MetricError: A not Hurwitz, or the solution fails the check (residual, positivity).
    """
    a = as_matrix("A", a)
    n = a.shape[0]
    q = np.eye(n) if q is None else as_matrix("Q", q)
    if q.shape != a.shape:
        raise ValueError(f"Q must have the shape of A {a.shape}, got {q.shape}")
    q = sym(q)
    if np.linalg.eigvalsh(q)[0] <= 0:
        raise ValueError("Q must be symmetric positive definite")
    abscissa = spectral_abscissa(a)
    if abscissa >= 0:
        raise MetricError(
            f"A is not Hurwitz (largest real part of an eigenvalue {abscissa:.4g} >= 0): "
            "no positive definite M solves M A + A^T M = -Q"
        )
    metric = sym(scipy.linalg.solve_continuous_lyapunov(a.T, -q))
    residual = np.abs(metric @ a + a.T @ metric + q).max()
    scale = np.abs(metric).max() * np.abs(a).max() + np.abs(q).max()
    smallest = float(np.linalg.eigvalsh(metric)[0])
    if not (residual <= 1e-8 * scale and smallest > 0):
        raise MetricError(
            f"the Lyapunov solve did not verify (residual {residual:.3g}, smallest eigenvalue "
            f"{smallest:.3g}); A is probably too close to not Hurwitz"
        )
    return metric


def is_metzler(matrix: np.ndarray) -> bool:
    off = matrix - np.diag(np.diag(matrix))
    return bool((off >= 0).all())


def metzler_diagonal_metric(a, shift: float = 0.0) -> np.ndarray:
    r"""Closed-form diagonal metric of a Hurwitz Metzler matrix, verified.

    For A Metzler (off-diagonal entries >= 0) and Hurwitz, ``-A^{-1} >= 0`` entrywise with a
    positive diagonal, so ``xi = -A^{-1} 1 > 0`` and ``eta = -A^{-T} 1 > 0``. With
    ``P = diag(eta_i / xi_i)`` the symmetric Metzler matrix ``B = P A + A^T P`` satisfies
    ``B xi = P A xi + A^T eta = -eta / xi - 1 < 0``; a symmetric Metzler matrix that maps a
    positive vector to a negative one is negative definite (scale by ``diag(xi)``: strictly
    diagonally dominant rows with negative diagonal), so ``P A + A^T P < 0``.

    With ``shift = s > 0`` the construction is applied to ``A + s I`` (which must still be
    Hurwitz), giving ``P A + A^T P < -2 s P``: a metric in which the comparison system
    contracts at rate at least s. Shifts close to ``-spectral_abscissa(A)`` give rates close
    to the best a diagonal metric can give.

    Returns the diagonal matrix P (largest entry 1). Raises :class:`MetricError` when A (+ sI)
    is not Hurwitz or the result fails the numerical check, ``ValueError`` when A is not
    Metzler.
    """
    a = as_matrix("A", a)
    if not is_metzler(a):
        off = a - np.diag(np.diag(a))
        raise ValueError(
            f"A must be Metzler (off-diagonal entries >= 0), got an off-diagonal entry {off.min():.4g}"
        )
    n = a.shape[0]
    shifted = a + shift * np.eye(n)
    abscissa = spectral_abscissa(shifted)
    if abscissa >= 0:
        raise MetricError(
            f"A + {shift:g} I is not Hurwitz (spectral abscissa {abscissa:.4g} >= 0): no diagonal "
            "metric exists for it"
        )
    ones = np.ones(n)
    try:
        xi = -np.linalg.solve(shifted, ones)
        eta = -np.linalg.solve(shifted.T, ones)
    except np.linalg.LinAlgError as error:
        raise MetricError(f"A + {shift:g} I is numerically singular: {error}") from None
    if not ((xi > 0).all() and (eta > 0).all() and np.isfinite(xi).all() and np.isfinite(eta).all()):
        raise MetricError("-A^{-1} 1 is not positive in floating point: A is too close to singular")
    p = eta / xi
    p = p / p.max()
    if not (p > 0).all():
        raise MetricError("the diagonal metric underflowed: A is too badly conditioned")
    metric = np.diag(p)
    value = normalized_lyapunov_value(metric, shifted)
    if not value + n * rounding(np.abs(shifted).max()) < 0:
        raise MetricError(
            f"the closed-form diagonal metric failed its check: mu_P(A + sI) = {value:.3g} >= 0"
        )
    return metric


@dataclass(frozen=True)
class DiagonalNormMetric:
    """Result of :func:`diagonal_norm_metric` (paper 000, Theorem 5).

    Attributes:
        metric: the best diagonal P found (largest entry 1), or None.
        scaled_norm: ``||P^{1/2} W P^{-1/2}||_2`` for that P (inf when none).
        lower_bound: the spectral radius of W; no P gives a scaled norm below it, so
            ``g * lower_bound >= 1`` proves that no P satisfies Theorem 5.
        method: how P was found.
        infeasible: True when the search proved that no P exists (spectral radius, or the LMI).
    """

    metric: np.ndarray | None
    scaled_norm: float
    lower_bound: float
    method: str
    infeasible: bool


def scaled_norm(weight: np.ndarray, log_scale: np.ndarray) -> float:
    """``||T W T^{-1}||_2`` with ``T = diag(exp(log_scale))``; equals ``||P^{1/2} W P^{-1/2}||``
    for ``P = T^2``."""
    return float(np.linalg.norm(weight * np.exp(log_scale[:, None] - log_scale[None, :]), 2))


def diagonal_norm_metric(
    weight, slope_bound: float = 1.0, *, method: str = "auto", maxiter: int = 400
) -> DiagonalNormMetric:
    r"""Search for a positive diagonal P with ``g^2 W^T P W - P < 0`` (paper 000, Theorem 5).

    The condition is ``g ||T W T^{-1}||_2 < 1`` with ``T = P^{1/2}``. Methods:

    - ``"descent"``: ``x -> log sigma_max(e^X W e^{-X})`` is **convex** in the diagonal X
      (Sezginer and Overton, "The largest singular value of e^X A e^{-X} is convex on convex
      sets of commuting matrices", IEEE TAC 35, 1990), so a local minimum is global. The
      search starts from the identity and from the Frobenius-optimal scaling (a smooth convex
      problem), then minimizes sigma_max with L-BFGS-B and its exact gradient
      ``d sigma / d x_k = sigma (u_k^2 - v_k^2)`` (u, v the top singular vectors). It is
      cheap and exact in exact arithmetic, but a nonsmooth minimum can stop L-BFGS-B slightly
      above the infimum, and the number of SVDs is capped (about ``3e8 / N^3``, at least 20,
      so a few seconds at N = 512): a failure is reported as "not found", not as
      "impossible", unless ``g rho(W) >= 1`` (no scaling goes below the spectral radius; the
      search is then skipped).
    - ``"lmi"``: the LMI ``g^2 W^T P W - P <= -I``, ``P >= I`` with cvxpy (optional extra
      ``stablernn[lmi]``); infeasibility reported by the solver is taken as proof (up to its
      tolerance).
    - ``"auto"``: descent, then the LMI when descent fails, cvxpy is installed and N <= 64.

    Whatever the method, the returned P is checked: ``scaled_norm`` is recomputed from P.
    """
    w = as_matrix("W", weight)
    g = check_positive("g", slope_bound)
    if method not in ("auto", "descent", "lmi"):
        raise ValueError(f"method must be one of 'auto', 'descent', 'lmi', got {method!r}")
    n = w.shape[0]
    radius = float(np.abs(np.linalg.eigvals(w)).max())
    candidates: list[tuple[float, np.ndarray, str]] = []
    infeasible = g * radius >= 1
    if method in ("auto", "descent"):
        zero = np.zeros(n)
        candidates.append((scaled_norm(w, zero), zero, "identity"))
        if n > 1 and not infeasible:
            frobenius = _frobenius_balance(w)
            candidates.append((scaled_norm(w, frobenius), frobenius, "Frobenius balancing"))
            start = min(candidates, key=lambda c: c[0])[1]
            spectral = _spectral_descent(w, start, maxiter)
            candidates.append((scaled_norm(w, spectral), spectral, "convex descent on sigma_max"))
    best = min(candidates, key=lambda c: c[0]) if candidates else (np.inf, None, "")
    use_lmi = method == "lmi" or (
        method == "auto" and not g * best[0] < 1 and not infeasible and n <= 64 and _has_cvxpy()
    )
    if use_lmi:
        from stablernn.contraction.lmi import theorem5_lmi

        p, status = theorem5_lmi(w, g)
        if p is not None:
            log_scale = 0.5 * np.log(p)
            value = scaled_norm(w, log_scale)
            if value < best[0]:
                best = (value, log_scale, "LMI (cvxpy)")
        elif status == "infeasible":
            infeasible = True
    value, log_scale, how = best
    if log_scale is None:
        return DiagonalNormMetric(None, np.inf, radius, "none", infeasible)
    p = np.exp(2 * (log_scale - log_scale.max()))
    return DiagonalNormMetric(np.diag(p), value, radius, how, infeasible and not g * value < 1)


def _has_cvxpy() -> bool:
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        return False
    return True


_BOUND = 30.0


def _frobenius_balance(w: np.ndarray) -> np.ndarray:
    squares = w * w
    np.fill_diagonal(squares, 0.0)
    if not squares.any():
        return np.zeros(len(w))

    def objective(x):
        e = squares * np.exp(2 * (x[:, None] - x[None, :]))
        total = e.sum()
        grad = 2 * (e.sum(axis=1) - e.sum(axis=0)) / total
        return np.log(total), grad

    result = scipy.optimize.minimize(
        objective, np.zeros(len(w)), jac=True, method="L-BFGS-B",
        bounds=[(-_BOUND, _BOUND)] * len(w), options={"maxiter": 500},
    )
    return result.x - result.x.mean()


def _spectral_descent(w: np.ndarray, start: np.ndarray, maxiter: int) -> np.ndarray:
    n = len(w)
    # evaluation budget: each evaluation is an SVD, O(n^3); a few seconds at most for large n
    budget = max(20, min(5000, int(3e8 / n**3)))

    def objective(x):
        u, s, vt = np.linalg.svd(w * np.exp(x[:, None] - x[None, :]))
        if s[0] == 0:
            return -np.inf, np.zeros_like(x)
        return np.log(s[0]), u[:, 0] ** 2 - vt[0] ** 2

    best_x, best_value = start, objective(start)[0]
    x = start
    for _ in range(3):  # restart: L-BFGS-B can stall at a kink of sigma_max
        result = scipy.optimize.minimize(
            objective, x, jac=True, method="L-BFGS-B",
            bounds=[(-_BOUND, _BOUND)] * len(w), options={"maxiter": maxiter, "maxfun": budget},
        )
        if result.fun < best_value - 1e-12:
            best_x, best_value, x = result.x, result.fun, result.x
        else:
            break
    return best_x - best_x.mean()
