r"""The conditions of paper 002 ("Lipschitz recurrent neural networks", Erichson et al.).

Model (paper 002, eq. 1 / eq. 4, with the scale alpha of eq. 12, column vectors):

    h' = alpha A h + sigma(W h + U x + b),     sigma L-Lipschitz (tanh: L = 1, monotone),

with Jacobian ``J = alpha A + D W``, ``D = diag(sigma')``, ``0 <= D <= L`` for a monotone sigma
(``|D| <= L`` otherwise). Functions accept either matrices (``A``, ``W``) or any object with
attributes ``.A`` and ``.W`` returning tensors (``stablernn.models.LipschitzCell`` /
``LipschitzRNN``), from which ``alpha``, ``step_size`` and ``method`` are read when present
(directly or on ``.cell``).

Theorem 1 of paper 002 concludes global exponential stability of an equilibrium; the
certificates below prove the stronger contraction (any two trajectories under the same input
converge), with an explicit metric and rate:

- case (a), ``sigma_min(A_sym) > L sigma_max(W)`` with ``A_sym < 0``: the identity metric.
  ``sym(J) = sym(alpha A) + sym(D W) <= lambda_max(sym(alpha A)) + L ||W||``, so
  ``rate >= -(lambda_max(sym(alpha A)) + L ||W||_2) = sigma_min(A_sym) - L sigma_max(W)``.
  For monotone sigma the midpoint bound ``-(lambda_max(sym(alpha A + L W / 2)) + L ||W|| / 2)``
  is never worse and is used when larger. W nonsingular is part of the paper's hypothesis but
  is not needed for contraction.
- case (b), sigma monotone, ``A_sym < 0``, ``W + W^T < 0``, ``A^T W + W^T A > 0``: the paper's
  proof builds ``V = h^T P h`` from the Kalman-Yakubovich-Popov lemma with ``U^T U = 0``, i.e.
  ``U = 0`` and ``P = -W^T``, which is a metric only when W is symmetric. For symmetric W
  (then ``W < 0``) the metric ``M = -W`` gives
  ``M J + J^T M = -(A^T W + W^T A) - 2 W D W <= -(A^T W + W^T A)``, hence the rate
  ``lambda_min((-W)^{-1/2} (A^T W + W^T A) (-W)^{-1/2}) / 2`` (exact: attained at D = 0).
  For non-symmetric W the hypothesis is reported but nothing is certified: there are pairs
  (A, W) meeting (b) for which no constant quadratic metric serves all slopes
  (:func:`stablernn.contraction.counterexamples.theorem1b_counterexample`, an exact dual
  certificate; about a third of random 3 x 3 pairs meeting (b) have no such metric).
- Proposition 1 (spectrum of ``S = (1-beta)(M + M^T) + beta (M - M^T) - gamma I``, eq. 6):
  the real parts of the eigenvalues of S and the eigenvalues of ``sym S`` lie in
  ``[2(1-beta) lambda_min(M_sym) - gamma, 2(1-beta) lambda_max(M_sym) - gamma]``. The paper
  prints the interval without the factor 2 (its proof writes ``S_sym = S + S^T`` and then
  ``(1-beta) M_sym - gamma I``); the printed interval fails e.g. for ``beta = 0, M = I``
  (S = (2 - gamma) I). :func:`proposition1_interval` returns the corrected one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stablernn._checks import check_non_negative, check_positive
from stablernn.contraction._inputs import as_matrix, rounding, sym, to_numpy
from stablernn.contraction.certificate import Certificate
from stablernn.contraction.certify import non_hurwitz_member
from stablernn.contraction.conditions import ConditionResult, _with_check
from stablernn.contraction.discrete import (
    euler_contraction_factor,
    max_rk2_step,
    rk2_contraction_factor,
)
from stablernn.contraction.family import lipschitz_family
from stablernn.contraction.metrics import MetricError, lyapunov_metric
from stablernn.contraction.verification import DEFAULT_MAX_VERTICES, check_family_metric


@dataclass(frozen=True)
class LipschitzSystem:
    """The matrices and discretization of a Lipschitz RNN (paper 002, eqs. 1, 9, 10, 12)."""

    A: np.ndarray
    W: np.ndarray
    alpha: float
    step_size: float | None
    method: str | None


def _attribute(obj: Any, name: str) -> Any:
    if hasattr(obj, name):
        return getattr(obj, name)
    cell = getattr(obj, "cell", None)
    return getattr(cell, name, None) if cell is not None else None


def lipschitz_system(model_or_a, weight=None, *, alpha: float | None = None) -> LipschitzSystem:
    """Read ``A``, ``W``, ``alpha``, ``step_size``, ``method`` from a model or from matrices."""
    if weight is None and hasattr(model_or_a, "A") and hasattr(model_or_a, "W"):
        model = model_or_a
        a = as_matrix("A", to_numpy(model.A))
        w = as_matrix("W", to_numpy(model.W))
        found_alpha = _attribute(model, "alpha")
        step = _attribute(model, "step_size")
        method = _attribute(model, "method")
        alpha = float(found_alpha) if alpha is None and found_alpha is not None else alpha
    else:
        if weight is None:
            raise ValueError(
                "pass a model with attributes .A and .W, or the matrices A and W; got "
                f"{type(model_or_a).__name__} and no W"
            )
        a, w = as_matrix("A", model_or_a), as_matrix("W", weight)
        step, method = None, None
    if a.shape != w.shape:
        raise ValueError(f"W must have the shape of A {a.shape}, got {w.shape}")
    alpha = 1.0 if alpha is None else check_non_negative("alpha", alpha)
    step = None if step is None else check_positive("step_size", step)
    return LipschitzSystem(a, w, alpha, step, method)


def theorem1a(
    model_or_a, weight=None, *, lipschitz: float = 1.0, alpha: float | None = None,
    monotone: bool = True, max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 002, Theorem 1 (a): ``A_sym < 0``, W nonsingular, ``sigma_min(A_sym) > L sigma_max(W)``.

    (``A`` stands for ``alpha A``.) ``holds`` is the hypothesis (exact). Certificate: identity
    metric, rate ``sigma_min(A_sym) - L ||W||_2`` (derivation in the module docstring), or the
    midpoint/vertex bound when larger.
    """
    system = lipschitz_system(model_or_a, weight, alpha=alpha)
    lip = check_positive("lipschitz", lipschitz)
    name = "paper 002, Theorem 1 (a)"
    a = system.alpha * system.A
    family = lipschitz_family(system.A, system.W, lip, system.alpha, monotone)
    top = float(np.linalg.eigvalsh(sym(a))[-1])
    singular = np.linalg.svd(system.W, compute_uv=False)
    details = {"lambda_max_A_sym": top, "sigma_max_W": float(singular[0]),
               "sigma_min_W": float(singular[-1])}
    if not top < 0:
        return ConditionResult(name, False, None, None,
                               f"A_sym is not negative definite (largest eigenvalue {top:.4g})",
                               True, details, family)
    if not singular[-1] > 1e-12 * singular[0]:
        return ConditionResult(name, False, None, None, "W is singular", True, details, family)
    if not -top > lip * singular[0]:
        return ConditionResult(
            name, False, None, None,
            f"sigma_min(A_sym) = {-top:.4g} <= L sigma_max(W) = {lip * singular[0]:.4g}",
            True, details, family,
        )
    derived = -top - lip * float(singular[0]) - system.A.shape[0] * rounding(abs(top) + lip * singular[0])
    return _with_check(
        name, family, np.eye(system.A.shape[0]), derived,
        f"sigma_min(A_sym) = {-top:.4g} > L sigma_max(W) = {lip * singular[0]:.4g}; identity metric",
        max_vertices, details,
    )


def theorem1b(
    model_or_a, weight=None, *, alpha: float | None = None, symmetry_tol: float = 1e-8,
    lipschitz: float = 1.0, max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 002, Theorem 1 (b): sigma monotone, ``A_sym < 0``, ``W + W^T < 0``,
    ``A^T W + W^T A > 0`` (A standing for ``alpha A``).

    ``holds`` is the hypothesis (exact). A metric is returned only for symmetric W
    (``M = -W``, rate ``lambda_min((-W)^{-1/2}(A^T W + W^T A)(-W)^{-1/2}) / 2``); for
    non-symmetric W the result says why nothing is certified (module docstring).
    The Lipschitz constant does not enter (any slopes ``D >= 0``); it only sets the family
    against which the metric is double-checked.
    """
    system = lipschitz_system(model_or_a, weight, alpha=alpha)
    lip = check_positive("lipschitz", lipschitz)
    name = "paper 002, Theorem 1 (b)"
    a, w = system.alpha * system.A, system.W
    family = lipschitz_family(system.A, w, lip, system.alpha, True)
    cross = sym(a.T @ w)  # (A^T W + W^T A) / 2
    facts = {
        "lambda_max_A_sym": float(np.linalg.eigvalsh(sym(a))[-1]),
        "lambda_max_W_sym": float(np.linalg.eigvalsh(sym(w))[-1]),
        "lambda_min_cross": float(np.linalg.eigvalsh(cross)[0]),
    }
    failed = [text for text, ok in (
        ("A_sym is not negative definite", facts["lambda_max_A_sym"] < 0),
        ("W + W^T is not negative definite", facts["lambda_max_W_sym"] < 0),
        ("A^T W + W^T A is not positive definite", facts["lambda_min_cross"] > 0),
    ) if not ok]
    if failed:
        return ConditionResult(name, False, None, None, "; ".join(failed), True, facts, family)
    norm = float(np.linalg.norm(w, 2))
    if np.linalg.norm(w - w.T, 2) > symmetry_tol * norm:
        return ConditionResult(
            name, True, None, None,
            "hypothesis holds, but W is not symmetric: the proof's KYP step forces P = -W^T "
            "(U^T U = 0), which is not a metric, and a constant metric need not exist; not "
            "certified", True, facts, family,
        )
    values, vectors = np.linalg.eigh(-sym(w))
    metric = sym((vectors * values) @ vectors.T)
    inverse_root = (vectors / np.sqrt(values)) @ vectors.T
    derived = float(np.linalg.eigvalsh(sym(inverse_root @ (2 * cross) @ inverse_root))[0]) / 2
    derived -= a.shape[0] * rounding(np.abs(cross).max() / values.min())
    metric = metric / np.abs(metric).max()
    return _with_check(name, family, metric, derived,
                       "hypothesis holds with symmetric W; metric -W", max_vertices, facts)


def _parametrization(param_or_free, beta, gamma):
    if beta is None and gamma is None and hasattr(param_or_free, "free"):
        return (as_matrix("free", to_numpy(param_or_free.free)), float(param_or_free.beta),
                float(param_or_free.gamma))
    if beta is None or gamma is None:
        raise ValueError("pass a SymmetricSkew module, or the free matrix with beta and gamma")
    return as_matrix("free", param_or_free), check_non_negative("beta", beta), check_non_negative("gamma", gamma)


def proposition1_interval(param_or_free, beta: float | None = None, gamma: float | None = None) -> tuple[float, float]:
    """Paper 002, Proposition 1 (corrected by the factor 2, see module docstring).

    For ``S = (1-beta)(M + M^T) + beta (M - M^T) - gamma I`` (eq. 6) returns
    ``(2(1-beta) lambda_min(M_sym) - gamma, 2(1-beta) lambda_max(M_sym) - gamma)``, which contains
    the real parts of the eigenvalues of S and the eigenvalues of ``(S + S^T) / 2``. Accepts a
    ``SymmetricSkew`` module (attributes ``free``, ``beta``, ``gamma``) or the three values.
    """
    free, beta, gamma = _parametrization(param_or_free, beta, gamma)
    values = np.linalg.eigvalsh(sym(free))
    return (2 * (1 - beta) * float(values[0]) - gamma, 2 * (1 - beta) * float(values[-1]) - gamma)


@dataclass(frozen=True)
class Proposition1Check:
    holds: bool
    interval: tuple[float, float]
    eigenvalue_real_parts: tuple[float, float]
    symmetric_part_eigenvalues: tuple[float, float]


def check_proposition1(matrix, param_or_free, beta: float | None = None, gamma: float | None = None) -> Proposition1Check:
    """Check that ``matrix`` (the built S) has its spectrum in :func:`proposition1_interval`."""
    s = as_matrix("S", matrix)
    low, high = proposition1_interval(param_or_free, beta, gamma)
    real = np.linalg.eigvals(s).real
    symmetric = np.linalg.eigvalsh(sym(s))
    # S may have been built in float32: allow the rounding of its dtype
    dtype = str(getattr(matrix, "dtype", "float64"))
    eps = np.finfo(np.float32).eps if "32" in dtype or "16" in dtype else np.finfo(float).eps
    tol = 64 * s.shape[0] * eps * max(1.0, float(np.abs(s).max()))
    holds = bool(real.min() >= low - tol and real.max() <= high + tol
                 and symmetric[0] >= low - tol and symmetric[-1] <= high + tol)
    return Proposition1Check(holds, (low, high), (float(real.min()), float(real.max())),
                             (float(symmetric[0]), float(symmetric[-1])))


def certify_lipschitz(
    model_or_a, weight=None, *, lipschitz: float = 1.0, alpha: float | None = None,
    monotone: bool = True, max_vertices: int = DEFAULT_MAX_VERTICES,
) -> Certificate:
    """Best certificate for a Lipschitz RNN (paper 002): a model, or the matrices A and W.

    Tries, and keeps the largest verified rate: paper 002 Theorem 1 (a) / the identity metric
    (midpoint bound), Theorem 1 (b) for symmetric W, and the Lyapunov metric of the midpoint
    Jacobian ``alpha A + (L/2) W`` checked against every slope (exact for N <= 12, a sound bound
    otherwise). ``max_euler_step`` is for the Euler map; when the model says its step size and
    method, ``details`` gives the contraction factor of its discrete map at that step
    (``rk2`` uses the bound of :func:`stablernn.contraction.discrete.rk2_contraction_factor`).
    """
    system = lipschitz_system(model_or_a, weight, alpha=alpha)
    lip = check_positive("lipschitz", lipschitz)
    family = lipschitz_family(system.A, system.W, lip, system.alpha, monotone)
    results: list[ConditionResult] = [
        theorem1a(system.A, system.W, lipschitz=lip, alpha=system.alpha, monotone=monotone,
                  max_vertices=max_vertices)
    ]
    if monotone:
        results.append(theorem1b(system.A, system.W, alpha=system.alpha, lipschitz=lip,
                                 max_vertices=max_vertices))
    if not results[0].contracting:
        identity = check_family_metric(family, np.eye(family.size), max_vertices=max_vertices)
        if identity.contracting:
            results.append(ConditionResult(
                "identity metric (midpoint bound on the slopes; sharper than paper 002, Theorem 1 (a))",
                True, np.eye(family.size), identity.rate,
                f"mu(alpha A + D W) <= -{identity.rate:.4g} for every slope ({identity.method})",
                True, {"check_method": identity.method}, family))
    try:
        center = lyapunov_metric(family.midpoint())
    except MetricError:
        center = None
    if center is not None:
        check = check_family_metric(family, center, max_vertices=max_vertices)
        if check.contracting:
            results.append(ConditionResult(
                "Lyapunov metric of the midpoint Jacobian, checked for every slope",
                True, center / np.abs(center).max(), check.rate,
                f"M (alpha A + L W / 2) + (.)^T M = -I, and mu_M(J) <= -{check.rate:.4g} for "
                f"every slope ({check.method})", True, {"check_method": check.method}, family))
    contracting = [r for r in results if r.contracting]
    if not contracting:
        reasons = "; ".join(f"{r.condition}: {r.reason}" for r in results)
        details = {"step_size": system.step_size, "method": system.method}
        bad = non_hurwitz_member(family, max_vertices=max_vertices)
        if bad is not None:
            details["non_hurwitz_slopes"] = bad.tolist()
            reasons = ("no constant metric exists: J = alpha A + D W is not Hurwitz at D = diag("
                       + ", ".join(f"{x:g}" for x in bad[:8]) + (", ..." if len(bad) > 8 else "")
                       + f"). {reasons}")
        return Certificate.refuse("none of paper 002, Theorem 1 (a), (b) or a checked metric",
                                  f"no metric verified. {reasons}", details)
    best = max(contracting, key=lambda r: r.rate)
    certificate = best.to_certificate(max_vertices=max_vertices)
    details = dict(certificate.details)
    details.update(step_size=system.step_size, method=system.method)
    reason = best.reason
    if system.step_size is not None:
        if system.method == "rk2":
            factor = rk2_contraction_factor(family, best.metric, system.step_size, max_vertices=max_vertices)
            details["max_rk2_step"] = max_rk2_step(family, best.metric, max_vertices=max_vertices).max_step
        else:
            factor = euler_contraction_factor(family, best.metric, system.step_size, max_vertices=max_vertices)
        details.update(discrete_factor=factor.factor, discrete_contracting=factor.holds)
        reason += (f"; the {system.method or 'euler'} map with step {system.step_size:g} "
                   + ("contracts" if factor.holds else "is not shown to contract")
                   + f" in the same metric (factor <= {factor.factor:.6g} per step)")
    return Certificate(True, certificate.condition, certificate.metric, certificate.rate,
                       certificate.max_euler_step, reason, details)
