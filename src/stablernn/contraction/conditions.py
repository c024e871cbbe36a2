r"""The contraction conditions of paper 000 ("RNNs of RNNs", Kozachkov et al.) as checks.

The model is paper 000, eq. 1 with tau = 1:

    x' = -x + W phi(x) + u,      phi' in [0, g]  (slope-restricted, elementwise),

whose Jacobian is ``J = -I + W D`` with ``D = diag(phi'(x))``, ``0 <= D_ii <= g``. Every check
returns a :class:`ConditionResult` with

- ``holds``: whether the theorem's hypothesis holds for these matrices,
- ``metric`` and ``rate``: a metric M and a lower bound on the rate, in the convention
  ``M J + J^T M <= -2 rate M`` for every such J (only when a metric was built and verified),
- ``reason``: one line.

The rate reported is the larger of the rate derived in the docstring (a proof, with the
numbers it needs checked on the actual matrices) and the rate from
:func:`stablernn.contraction.verification.check_family_metric` for the returned metric
(exact over all slope vertices for small N, a sound bound otherwise).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stablernn._checks import check_positive
from stablernn.contraction._inputs import as_matrix, as_vector, rounding, sym
from stablernn.contraction.certificate import Certificate
from stablernn.contraction.family import JacobianFamily, rnn_family
from stablernn.contraction.metrics import (
    MetricError,
    diagonal_norm_metric,
    metzler_diagonal_metric,
    normalized_lyapunov_value,
    spectral_abscissa,
)
from stablernn.contraction.verification import (
    DEFAULT_MAX_VERTICES,
    check_family_metric,
    comparison_bound,
)


@dataclass(frozen=True)
class ConditionResult:
    """Outcome of one condition.

    Attributes:
        condition: e.g. ``"paper 000, Theorem 1"``.
        holds: the theorem's hypothesis holds (checked numerically).
        metric: the verified metric (N x N numpy array), or None.
        rate: lower bound on the contraction rate in ``metric`` (tau = 1), or None.
        reason: one line in plain words.
        exact: whether ``holds`` is an exact decision (False when a search failed to find
            a metric without proving that none exists).
        details: extra numbers (JSON-serialisable).
        family: the Jacobian family the metric was checked against.
    """

    condition: str
    holds: bool
    metric: np.ndarray | None
    rate: float | None
    reason: str
    exact: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)
    family: JacobianFamily | None = field(default=None, repr=False, compare=False)

    @property
    def contracting(self) -> bool:
        """A verified metric with a positive rate."""
        return self.metric is not None and self.rate is not None and self.rate > 0

    def to_certificate(self, *, max_vertices: int = DEFAULT_MAX_VERTICES) -> Certificate:
        """The :class:`Certificate` (with ``max_euler_step`` when contracting)."""
        step = None
        details = dict(self.details)
        if self.contracting and self.family is not None:
            from stablernn.contraction.discrete import max_euler_step

            bound = max_euler_step(self.family, self.metric, max_vertices=max_vertices)
            step = bound.max_step
            details["max_euler_step_exact"] = bound.exact
        return Certificate(
            contracting=self.contracting,
            condition=self.condition,
            metric=self.metric if self.contracting else None,
            rate=self.rate if self.contracting else None,
            max_euler_step=step,
            reason=self.reason,
            details=details,
        )


def _inputs(weight, slope_bound) -> tuple[np.ndarray, float]:
    return as_matrix("W", weight), check_positive("g", slope_bound)


def _with_check(
    condition: str,
    family: JacobianFamily,
    metric: np.ndarray,
    derived_rate: float | None,
    reason: str,
    max_vertices: int,
    details: dict | None = None,
) -> ConditionResult:
    """Verify ``metric`` on ``family``; the rate is the checked rate.

    A derived rate never replaces the check: when the check fails the metric is not accepted,
    whatever the derivation says, and when it holds the checked rate is reported (the derived
    one goes into ``details`` for comparison).
    """
    check = check_family_metric(family, metric, max_vertices=max_vertices)
    exact_gap = None if derived_rate is None or not check.exact else derived_rate - check.rate
    rate = check.rate
    details = dict(details or {})
    details.update(rate_exact=bool(check.exact),
                   checked_rate=check.rate, check_method=check.method)
    if derived_rate is not None:
        details["derived_rate"] = derived_rate
    if exact_gap is not None and exact_gap > 2 * check.round_off + 1e-9 * max(1.0, abs(check.rate)):
        details["warning"] = f"derived rate exceeds the exact worst case by {exact_gap:.3g}"
    if not rate > 0:
        return ConditionResult(condition, True, None, None,
                               f"hypothesis holds but the metric did not verify numerically "
                               f"(rate {rate:.3g}); {reason}", False, details, family)
    return ConditionResult(condition, True, metric, rate, reason, True, details, family)


def relaxed_absolute(weight) -> np.ndarray:
    """``|W|`` with the diagonal relaxation of paper 000, Theorem 1: ``|W|_ii = max(W_ii, 0)``."""
    w = as_matrix("W", weight)
    result = np.abs(w)
    np.fill_diagonal(result, np.maximum(np.diag(w), 0.0))
    return result


def theorem1(weight, slope_bound: float = 1.0, *, max_vertices: int = DEFAULT_MAX_VERTICES) -> ConditionResult:
    r"""Paper 000, Theorem 1 (absolute-value restricted weights), with the diagonal relaxation.

    Hypothesis: there is a positive diagonal P with ``P A + A^T P < 0`` for the Metzler matrix
    ``A = g|W|' - I``, where ``|W|'_ij = |W_ij|`` off the diagonal and
    ``|W|'_ii = max(W_ii, 0)`` (the relaxation: a self weight ``W_ii <= 0`` only helps).
    For Metzler matrices this is equivalent to A being Hurwitz (Narendra and Shorten 2010),
    which is what is tested: ``holds`` is an exact decision.

    Metric: the closed-form diagonal metric of :func:`metzler_diagonal_metric` applied to
    ``A + s I`` for a few shifts ``s`` in ``[0, -abscissa(A))``, the one with the best rate.

    Rate (derivation, proof of Theorem 1): for diagonal P,
    ``dx^T P J dx = -dx^T P dx + sum_ij P_i W_ij D_j dx_i dx_j <= |dx|^T P A |dx|``, so with
    ``y = |dx|`` and ``P A + A^T P <= -2 lambda P`` we get
    ``dx^T (P J + J^T P) dx <= -2 lambda dx^T P dx``: the rate is
    ``-lambda_max(P^{-1/2} sym(P A) P^{-1/2})`` (the comparison bound of
    :func:`stablernn.contraction.verification.comparison_bound`). For small N the exact worst
    case over the slope vertices is used when larger.
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 1"
    n = w.shape[0]
    comparison = g * relaxed_absolute(w) - np.eye(n)
    abscissa = spectral_abscissa(comparison)
    details = {"comparison_abscissa": abscissa}
    family = rnn_family(w, g)
    if not abscissa < 0:
        return ConditionResult(
            name, False, None, None,
            f"g|W|' - I is not Hurwitz (largest real part of an eigenvalue {abscissa:.4g} >= 0), "
            "so no positive diagonal P exists (Metzler: Hurwitz <=> diagonally stable)",
            True, details, family,
        )
    best: tuple[float, np.ndarray] | None = None
    for fraction in (0.0, 0.5, 0.9, 0.99):
        try:
            metric = metzler_diagonal_metric(comparison, shift=-fraction * abscissa)
        except MetricError:
            continue
        rate = -comparison_bound(family, metric)
        if best is None or rate > best[0]:
            best = (rate, metric)
    if best is None:
        return ConditionResult(
            name, True, None, None,
            "g|W|' - I is Hurwitz but the closed-form diagonal metric failed its numerical "
            "check (matrix too close to singular)", True, details, family,
        )
    rate, metric = best
    return _with_check(
        name, family, metric, rate,
        f"g|W|' - I is Hurwitz (spectral abscissa {abscissa:.4g}); closed-form diagonal metric "
        "P = diag(eta/xi) verified", max_vertices, details,
    )


def theorem1_diagonal_metric(weight, slope_bound: float = 1.0) -> tuple[np.ndarray, float]:
    """The Theorem 1 metric and rate: ``(P, rate)``; ``MetricError`` when Theorem 1 fails.

    P is the verified diagonal metric (an N x N numpy array) of :func:`theorem1`.
    """
    result = theorem1(weight, slope_bound)
    if not result.contracting:
        raise MetricError(f"paper 000, Theorem 1 does not certify W: {result.reason}")
    return result.metric, float(result.rate)


def theorem2(
    weight, slope_bound: float = 1.0, *, symmetry_tol: float = 1e-8,
    max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 000, Theorem 2 (symmetric weights): ``W = W^T`` and ``g W < I``.

    ``holds``: ``||W - W^T|| <= symmetry_tol ||W||`` and ``g lambda_max(W) < 1`` (exact).

    Metric and rate (derived here for eq. 1 directly; the paper's proof works in the
    firing-rate coordinates y of appendix A.1 and needs the transformation ``x = W y + b``).
    Take ``0 < lambda < 1`` with ``g W <= (1 - lambda) I``, ``c = (1 - lambda) / g`` and

        M = (I + (I - W / c)^{1/2})^{-2}     (a function of W, so it commutes with W).

    With ``gamma^2 = g / (4 (1 - lambda)) = 1 / (4 c)`` and ``R`` the symmetric root of
    ``W = R - gamma^2 R^2`` given by ``gamma^2 R = (I - (I - W/c)^{1/2}) / 2``, put
    ``T = I - gamma^2 R = (I + (I - W/c)^{1/2}) / 2 >= I/2``; then ``W = R T``,
    ``M = gamma^2 T^{-2}`` (up to scale) and the congruence ``T (M J + J^T M + 2 lambda M) T``
    equals ``gamma^2 (-2 (1 - lambda) I + R D + D R - 2 gamma^2 R D R)``. For any v, with ``a = R v``,
    ``gamma^2 a^T D a - a^T D v >= -v^T D v / (4 gamma^2) >= -g |v|^2 / (4 gamma^2)``
    (complete the square in the D-weighted product; ``0 <= D <= g``), so the bracket is
    ``<= (-2 (1 - lambda) + g / (2 gamma^2)) I = 0``. Hence the rate is
    ``lambda = 1 - g lambda_max(W)``, which is exact (``D = g I`` along the top eigenvector).
    When ``W < 0`` the metric ``M = (-W)^{-1}`` gives rate 1 (``M W = -I``, as in Theorem 3);
    when ``lambda_max(W) = 0`` exactly, ``lambda = 0.99`` is used. The paper asks phi' > 0;
    the argument above needs only ``0 <= phi' <= g``. A residual asymmetry ``W_a`` within the
    tolerance costs at most ``g ||W_a|| sqrt(cond M)`` of rate, which is subtracted.
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 2"
    n = w.shape[0]
    family = rnn_family(w, g)
    norm = float(np.linalg.norm(w, 2))
    asymmetric = 0.5 * (w - w.T)
    asymmetry = float(np.linalg.norm(asymmetric, 2))
    if asymmetry > symmetry_tol * max(norm, 1e-300):
        return ConditionResult(name, False, None, None,
                               f"W is not symmetric (||W - W^T|| / 2 = {asymmetry:.3g})",
                               True, {"asymmetry": asymmetry}, family)
    values, vectors = np.linalg.eigh(sym(w))
    top = float(values[-1])
    details = {"lambda_max_W": top}
    if not g * top < 1:
        return ConditionResult(name, False, None, None,
                               f"g lambda_max(W) = {g * top:.4g} >= 1", True, details, family)
    if top < 0:
        metric_values = -1.0 / values
        derived = 1.0
        how = "metric (-W)^-1 (M W = -I), rate 1"
    else:
        how = "metric (I + (I - W/c)^(1/2))^-2 with c = (1 - rate) / g"
        derived = 1.0 - g * top if g * top >= 1e-2 else 0.99
        c = (1.0 - derived) / g
        metric_values = (1.0 + np.sqrt(np.clip(1.0 - values / c, 0.0, None))) ** -2
    metric_values = metric_values / metric_values.max()
    metric = sym((vectors * metric_values) @ vectors.T)
    condition_number = float(metric_values.max() / metric_values.min())
    derived -= g * asymmetry * np.sqrt(condition_number) + n * rounding(norm * g)
    return _with_check(
        name, family, metric, derived,
        f"W symmetric with g lambda_max(W) = {g * top:.4g} < 1; {how}",
        max_vertices, details,
    )


def _diagonal(name: str, value, size: int) -> np.ndarray:
    array = np.asarray(value.detach().cpu().double().numpy() if hasattr(value, "detach") else value, float)
    if array.ndim == 2:
        if array.shape != (size, size) or np.any(array - np.diag(np.diag(array))):
            raise ValueError(f"{name} must be a positive diagonal {size} x {size} matrix or a vector, "
                             f"got a non-diagonal matrix of shape {array.shape}")
        array = np.diag(array)
    vector = as_vector(name, array, size)
    if not (vector > 0).all():
        raise ValueError(f"{name} must have positive diagonal entries, got minimum {vector.min():.4g}")
    return vector


def symmetrizing_scaling(weight, tol: float = 1e-10) -> np.ndarray | None:
    """Positive r with ``diag(r)^{-1} W`` symmetric, or None when there is none.

    Needs ``W_ij = 0 <=> W_ji = 0`` and ``W_ij W_ji > 0``; on each connected component of
    the graph of W, ``r_j = r_i W_ji / W_ij`` along a spanning tree (breadth first), then every
    edge is checked (cycles must agree). Entries below ``tol * max|W|`` count as zero.
    """
    w = as_matrix("W", weight)
    n = w.shape[0]
    zero = tol * (np.abs(w).max() or 1.0)
    nonzero = np.abs(w) > zero
    np.fill_diagonal(nonzero, False)
    if (nonzero != nonzero.T).any() or (w[nonzero] * w.T[nonzero] <= 0).any():
        return None
    log_r = np.full(n, np.nan)
    for root in range(n):
        if not np.isnan(log_r[root]):
            continue
        log_r[root] = 0.0
        queue = deque([root])
        while queue:
            i = queue.popleft()
            for j in np.flatnonzero(nonzero[i]):
                if np.isnan(log_r[j]):
                    log_r[j] = log_r[i] + np.log(w[j, i] / w[i, j])
                    queue.append(j)
    r = np.exp(log_r - log_r.max())
    scaled = w / r[:, None]
    if np.abs(scaled - scaled.T).max() > 1e-9 * (np.abs(scaled).max() or 1.0):
        return None
    return r


def theorem3(
    weight, slope_bound: float = 1.0, *, p1=None, q=None, p2=None, tol: float = 1e-9,
    max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 000, Theorem 3: ``W = -P1 Q P2`` with P1, P2 positive diagonal, Q = Q^T > 0.

    With the factors given, they are checked (``||W + P1 Q P2|| <= tol ||P1 Q P2||``). Without
    them, a factorization is searched exactly: ``W = -P1 Q P2`` iff ``R^{-1} W`` is symmetric
    negative definite for the positive diagonal ``R = P1 P2^{-1}`` (take ``Q' = P2 Q P2``);
    R is unique up to scale on each connected component of W's graph
    (:func:`symmetrizing_scaling`), and scaling a component does not change definiteness, so
    ``holds`` is an exact decision. Then ``P1 = R, P2 = I, Q = -R^{-1} W``.

    Metric ``M = (P1 Q P1)^{-1}``, rate 1 (derivation, proof of Theorem 3):
    ``M W = -P1^{-1} P2`` is diagonal and negative, so
    ``M J + J^T M = -2 M - 2 P1^{-1} P2 D <= -2 M`` for every ``D >= 0`` and any g; rate 1 is
    attained at ``D = 0`` and no metric does better there. The rounding residual ``E`` of
    ``M W`` off the diagonal costs at most ``g ||E|| / lambda_min(M)``, which is subtracted.
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 3"
    n = w.shape[0]
    family = rnn_family(w, g)
    given = [x is not None for x in (p1, q, p2)]
    if any(given) and not all(given):
        raise ValueError("p1, q and p2 must be given together (or none of them), got "
                         + ", ".join(k for k, x in zip(("p1", "q", "p2"), (p1, q, p2)) if x is not None))
    if all(given):
        d1, d2 = _diagonal("p1", p1, n), _diagonal("p2", p2, n)
        qm = as_matrix("q", q)
        if qm.shape != (n, n):
            raise ValueError(f"q must have shape ({n}, {n}), got {qm.shape}")
        if np.abs(qm - qm.T).max() > 1e-10 * (np.abs(qm).max() or 1.0):
            return ConditionResult(name, False, None, None, "Q is not symmetric", True, {}, family)
        qm = sym(qm)
        if not np.linalg.eigvalsh(qm)[0] > 0:
            return ConditionResult(name, False, None, None, "Q is not positive definite", True, {}, family)
        product = d1[:, None] * qm * d2[None, :]
        residual = float(np.linalg.norm(w + product, 2))
        if residual > tol * max(float(np.linalg.norm(product, 2)), 1e-300):
            return ConditionResult(name, False, None, None,
                                   f"W != -P1 Q P2 (residual {residual:.3g})", True,
                                   {"residual": residual}, family)
        how = "the given factorization W = -P1 Q P2 checks"
    else:
        r = symmetrizing_scaling(w)
        if r is None:
            return ConditionResult(name, False, None, None,
                                   "no positive diagonal R makes R^{-1} W symmetric, so W is not "
                                   "-P1 Q P2", True, {}, family)
        qm = sym(-w / r[:, None])
        smallest = float(np.linalg.eigvalsh(qm)[0])
        if not smallest > 0:
            return ConditionResult(name, False, None, None,
                                   f"R^{{-1}} W is symmetric but not negative definite (largest "
                                   f"eigenvalue {-smallest:.4g} >= 0)", True, {}, family)
        d1, d2 = r, np.ones(n)
        how = "W = -P1 Q P2 with P1 = R (symmetrizing scaling), P2 = I, Q = -R^{-1} W"
    inner = d1[:, None] * qm * d1[None, :]
    metric = sym(np.linalg.inv(inner))
    metric = metric / np.abs(metric).max()
    product = metric @ w
    off = product - np.diag(np.diag(product))
    smallest = float(np.linalg.eigvalsh(metric)[0])
    if (np.diag(product) > 0).any():
        return ConditionResult(name, True, None, None,
                               "M W has a positive diagonal entry in floating point", False, {}, family)
    derived = 1.0 - g * float(np.linalg.norm(off, 2)) / smallest - n * rounding(g * np.abs(product).max() / smallest)
    return _with_check(name, family, metric, derived, f"{how}; metric (P1 Q P1)^-1, rate 1",
                       max_vertices, {"p1": d1.tolist(), "p2": d2.tolist()})


def theorem4(
    weight, slope_bound: float = 1.0, *, zero_tol: float = 0.0,
    max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 000, Theorem 4: ``g W - I`` triangular and Hurwitz (``g max_i W_ii < 1``).

    ``holds``: W lower or upper triangular (entries beyond ``zero_tol * max|W|`` on the other
    side count as nonzero; default exact zeros) and ``g max_i W_ii < 1`` (exact).

    Metric, as in the proof: ``Gamma = diag(eps^k)`` (k = i for lower, N-1-i for upper
    triangular W) and ``M = Gamma^2``. Then ``Gamma J Gamma^{-1} = -I + (diag(W) + E) D`` with
    ``E_ij = W_ij eps^{|i-j|}`` the scaled strictly triangular part, and

        mu_M(J) <= -1 + g max_i max(W_ii, 0) + g ||E||_2 = -m + g ||E(eps)||_2,

    so the rate is at least ``m - g ||E(eps)||_2`` (m > 0 is the hypothesis). eps is chosen
    on a grid to maximize this bound, keeping ``eps^(2(N-1))`` above 1e-280 so the metric is
    representable. Note that Theorem 4 is contained in Theorem 1: ``g|W|' - I`` is then
    triangular with diagonal ``g max(W_ii, 0) - 1 < 0``, hence Hurwitz.
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 4"
    n = w.shape[0]
    family = rnn_family(w, g)
    zero = zero_tol * (np.abs(w).max() or 1.0)
    lower = bool((np.abs(np.triu(w, 1)) <= zero).all())
    upper = bool((np.abs(np.tril(w, -1)) <= zero).all())
    if not (lower or upper):
        return ConditionResult(name, False, None, None, "W is not triangular", True, {}, family)
    top = float(np.diag(w).max())
    if not g * top < 1:
        return ConditionResult(name, False, None, None,
                               f"g W - I is not Hurwitz (g max W_ii = {g * top:.4g} >= 1)", True,
                               {}, family)
    margin = 1.0 - g * max(top, 0.0)
    strict = w - np.diag(np.diag(w))  # with zero_tol, entries treated as zero stay in
    exponent = np.arange(n) if lower else np.arange(n)[::-1]
    # (Gamma W Gamma^{-1})_ij = W_ij eps^(k_i - k_j): small below the triangle, large above it
    distance = exponent[:, None] - exponent[None, :]
    smallest_eps = 10 ** (-280 / max(2 * (n - 1), 1))
    grid = np.unique(np.concatenate([np.logspace(np.log10(smallest_eps), 0, 41), [1.0]]))
    best_rate, best_eps = -np.inf, 1.0
    for eps in grid:
        scaled = strict * eps ** distance.astype(float)
        rate = margin - g * float(np.linalg.norm(scaled, 2))
        if rate > best_rate:
            best_rate, best_eps = rate, float(eps)
    if not best_rate > 0:
        return ConditionResult(
            name, True, None, None,
            "g W - I is triangular and Hurwitz, but the metric diag(eps^(2k)) of the proof needs "
            "an eps too small for floating point at this size; use Theorem 1's metric",
            True, {}, family,
        )
    metric = np.diag(best_eps ** (2.0 * exponent))
    return _with_check(
        name, family, metric, best_rate - n * rounding(g * np.abs(w).max()),
        f"g W - I triangular with g max W_ii = {g * top:.4g} < 1; metric diag(eps^(2k)), "
        f"eps = {best_eps:.3g}", max_vertices, {"eps": best_eps},
    )


def theorem5(
    weight, slope_bound: float = 1.0, *, method: str = "auto",
    max_vertices: int = DEFAULT_MAX_VERTICES,
) -> ConditionResult:
    r"""Paper 000, Theorem 5: a positive diagonal P with ``g^2 W^T P W - P < 0``.

    Equivalently ``g ||P^{1/2} W P^{-1/2}||_2 < 1``. P is searched by
    :func:`stablernn.contraction.metrics.diagonal_norm_metric` (identity, then a convex descent;
    optionally the LMI with cvxpy). ``holds`` is exact when True (P checked) and when
    ``g rho(W) >= 1`` (no scaling beats the spectral radius) or the LMI is infeasible;
    otherwise "not found" (``exact = False``).

    Rate (proof of Theorem 5): ``P^{1/2} J P^{-1/2} = -I + (P^{1/2} W P^{-1/2}) D`` (D diagonal
    commutes with P), so ``mu_P(J) <= -1 + g ||P^{1/2} W P^{-1/2}||``: rate
    ``1 - g ||P^{1/2} W P^{-1/2}||_2``.
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 5"
    n = w.shape[0]
    family = rnn_family(w, g)
    found = diagonal_norm_metric(w, g, method=method)
    details = {"scaled_norm": found.scaled_norm, "spectral_radius": found.lower_bound,
               "search": found.method}
    derived = 1.0 - g * found.scaled_norm - n * rounding(g * found.scaled_norm)
    if found.metric is None or not derived > 0:
        if found.infeasible:
            why = (f"g rho(W) = {g * found.lower_bound:.4g} >= 1" if g * found.lower_bound >= 1
                   else "the LMI is infeasible")
            return ConditionResult(name, False, None, None,
                                   f"no diagonal P exists: {why}", True, details, family)
        return ConditionResult(
            name, False, None, None,
            f"no diagonal P found: best g ||P^(1/2) W P^(-1/2)|| = {g * found.scaled_norm:.4g} >= 1 "
            f"(not proven impossible; spectral-radius bound {g * found.lower_bound:.4g} < 1)",
            False, details, family,
        )
    return _with_check(
        name, family, found.metric, derived,
        f"g ||P^(1/2) W P^(-1/2)||_2 = {g * found.scaled_norm:.4g} < 1 with diagonal P "
        f"({found.method})", max_vertices, details,
    )


def theorem6_first_inequality(weight, slope_bound: float = 1.0, *, p=None) -> ConditionResult:
    r"""Paper 000, Theorem 6, **first inequality only**: a positive diagonal P and c > 0 with

        P (g W - I) + (g W - I)^T P <= -c P.

    (The theorem's statement prints ``(gW - I) P + P (gW^T - I)``; its proof uses the form
    above, which is the one that makes the argument work. The two are equivalent for existence,
    with P replaced by ``P^{-1}``.) Theorem 6 concludes contraction in the **time-varying**
    metric ``P D(t)`` only if also ``D' - c g^{-1} D <= -beta D`` along trajectories (the
    slopes may change only slowly); that second inequality depends on the inputs and cannot be
    checked from W, and the metric degenerates where a slope is 0 (ReLU). So this check never
    certifies contraction: the result has ``metric = None``, ``rate = None``, and the P and c
    found are in ``details``.

    P is taken from: the given ``p``; else the identity; else Theorem 1's metric (valid by the
    comparison argument whenever ``g|W|' - I`` is Hurwitz); else the LMI with cvxpy when
    installed (N <= 64). ``holds`` is exact when True; False means "not found".
    """
    w, g = _inputs(weight, slope_bound)
    name = "paper 000, Theorem 6 (first inequality only)"
    n = w.shape[0]
    a = g * w - np.eye(n)
    candidates: list[tuple[str, np.ndarray]] = []
    if p is not None:
        candidates.append(("given P", np.diag(_diagonal("p", p, n))))
    else:
        candidates.append(("identity", np.eye(n)))
        first = theorem1(w, g)
        if first.metric is not None:
            candidates.append(("Theorem 1's diagonal metric", first.metric))
    best = None
    for how, metric in candidates:
        c = -2.0 * normalized_lyapunov_value(metric, a) - n * rounding(np.abs(a).max())
        if best is None or c > best[2]:
            best = (how, metric, c)
    exact = best[2] > 0 or p is not None
    if not best[2] > 0 and p is None and n <= 64:
        try:
            from stablernn.contraction.lmi import diagonal_stability_lmi

            found, status = diagonal_stability_lmi(a)
        except ImportError:
            found, status = None, "cvxpy not installed"
        if found is not None:
            metric = np.diag(found / found.max())
            c = -2.0 * normalized_lyapunov_value(metric, a) - n * rounding(np.abs(a).max())
            if c > best[2]:
                best = ("LMI (cvxpy)", metric, c)
        elif status == "infeasible":
            exact = True
    how, metric, c = best
    tail = ("; contraction also needs the slope-rate condition D' - c g^-1 D <= -beta D "
            "(time-varying metric P D), which cannot be checked from W: not certified")
    details = {"P": np.diag(metric).tolist(), "c": c, "found_with": how}
    if c > 0:
        return ConditionResult(name, True, None, None,
                               f"P (gW - I) + (gW - I)^T P <= -{c:.4g} P with {how}{tail}",
                               True, details, None)
    return ConditionResult(name, False, None, None,
                           "no diagonal P found for the first inequality" + tail, exact, details, None)
