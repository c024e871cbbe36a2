r"""Best certificate for a weight matrix of paper 000, eq. 1 (``x' = -x + W phi(x) + u``).

:func:`certify_matrix` tries, in this order, and keeps the largest verified rate:

1. Theorem 3 (exact decision; rate 1, the best any metric can give since ``J = -I`` at D = 0),
2. Theorem 1 (exact decision; closed-form diagonal metric),
3. Theorem 2 (symmetric W),
4. Theorem 4 (triangular W; contained in Theorem 1, kept for its explicit metric),
5. only if none of these certified: Theorem 5 (diagonal-scaling search), then, if that fails
   too, a direct check of candidate metrics (identity, Lyapunov metrics of the Jacobians at the
   slope midpoint and at ``D = g I``) over every slope (exact for N <= 12, sound bound
   otherwise).

When nothing certifies, the certificate says ``contracting=False`` with each condition's reason,
and, when some Jacobian of the family is not Hurwitz, that **no** constant metric can exist
(``M J + J^T M < 0`` forces J Hurwitz).
"""

from __future__ import annotations

import numpy as np

from stablernn._checks import check_positive
from stablernn.contraction._inputs import as_matrix
from stablernn.contraction.certificate import Certificate
from stablernn.contraction.conditions import (
    ConditionResult,
    theorem1,
    theorem2,
    theorem3,
    theorem4,
    theorem5,
)
from stablernn.contraction.family import JacobianFamily, rnn_family
from stablernn.contraction.metrics import MetricError, lyapunov_metric
from stablernn.contraction.verification import (
    DEFAULT_MAX_VERTICES,
    _vertex_chunks,
    check_family_metric,
)

DIRECT_CHECK = "direct check of M J + J^T M < 0 over every slope (paper 000, section A.2)"


def direct_metric_check(
    weight, slope_bound: float = 1.0, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> ConditionResult:
    """Candidate metrics (identity; Lyapunov metrics of ``-I + (g/2) W`` and ``-I + g W``)
    checked against the whole slope box; the best verified one."""
    w = as_matrix("W", weight)
    g = check_positive("g", slope_bound)
    family = rnn_family(w, g)
    n = w.shape[0]
    candidates = {"identity": np.eye(n)}
    for label, jacobian in (("Lyapunov metric at D = g I / 2", family.midpoint()),
                            ("Lyapunov metric at D = g I", -np.eye(n) + g * w)):
        try:
            candidates[label] = lyapunov_metric(jacobian)
        except MetricError:
            pass
    best = None
    for label, metric in candidates.items():
        check = check_family_metric(family, metric, max_vertices=max_vertices)
        if best is None or check.rate > best[1].rate:
            best = (label, check, metric)
    label, check, metric = best
    details = {"candidate": label, "check_method": check.method, "rate_exact": check.exact}
    if check.contracting:
        return ConditionResult(DIRECT_CHECK, True, metric / np.abs(metric).max(), check.rate,
                               f"{label} verified: {check.method}", True, details, family)
    return ConditionResult(DIRECT_CHECK, False, None, None,
                           f"no candidate metric verified (best: {label}, rate bound "
                           f"{check.rate:.4g}, {check.method})", False, details, family)


def non_hurwitz_member(family: JacobianFamily, *, max_vertices: int = DEFAULT_MAX_VERTICES,
                       samples: int = 64, seed: int = 0) -> np.ndarray | None:
    """Slopes d with ``J(d)`` not Hurwitz (then no constant metric exists), or None.

    Tries all vertices when at most ``max_vertices``, otherwise the two constant vertices and
    random ones. None does not prove that every member is Hurwitz.
    """
    k = family.slopes
    if k <= 62 and (1 << k) <= max_vertices:
        batches = _vertex_chunks(k, family.low, family.high, family.size)
    else:
        rng = np.random.default_rng(seed)
        samples = samples if family.size <= 64 else min(samples, 8)
        sample = np.where(rng.random((max(samples, 2), k)) < 0.5, family.low, family.high)
        sample[0], sample[1] = family.low, family.high
        batches = [sample]
    for vertices in batches:
        abscissae = np.linalg.eigvals(family.jacobian(vertices)).real.max(axis=1)
        bad = np.flatnonzero(abscissae >= 0)
        if bad.size:
            return vertices[bad[0]]
    return None


def certify_matrix(
    weight, slope_bound: float = 1.0, *, max_vertices: int = DEFAULT_MAX_VERTICES,
    theorem5_method: str = "auto",
) -> Certificate:
    """The best verified :class:`Certificate` for eq. 1 of paper 000 with weight W and slopes in [0, g].

    See the module docstring for the order. Raises ``ValueError`` for a non-square or
    non-finite W or a g that is not a finite number > 0.
    """
    w = as_matrix("W", weight)
    g = check_positive("g", slope_bound)
    results = [theorem3(w, g, max_vertices=max_vertices), theorem1(w, g, max_vertices=max_vertices),
               theorem2(w, g, max_vertices=max_vertices), theorem4(w, g, max_vertices=max_vertices)]
    if not any(r.contracting for r in results):
        results.append(theorem5(w, g, method=theorem5_method, max_vertices=max_vertices))
        if not results[-1].contracting:
            results.append(direct_metric_check(w, g, max_vertices=max_vertices))
    contracting = [r for r in results if r.contracting]
    if contracting:
        top = max(r.rate for r in contracting)
        best = next(r for r in contracting if r.rate >= top - 1e-9 * max(1.0, abs(top)))
        certificate = best.to_certificate(max_vertices=max_vertices)
        others = [r.condition for r in contracting if r is not best]
        if others:
            details = dict(certificate.details, also_certified_by=others)
            certificate = Certificate(certificate.contracting, certificate.condition,
                                      certificate.metric, certificate.rate,
                                      certificate.max_euler_step, certificate.reason, details)
        return certificate
    family = rnn_family(w, g)
    reasons = "; ".join(f"{r.condition.replace('paper 000, ', '')}: {r.reason}" for r in results)
    bad = non_hurwitz_member(family, max_vertices=max_vertices)
    details = {}
    if bad is not None:
        details["non_hurwitz_slopes"] = bad.tolist()
        reasons = ("no constant metric exists: J = -I + W D is not Hurwitz at D = diag("
                   + ", ".join(f"{x:g}" for x in bad[:8]) + (", ..." if len(bad) > 8 else "")
                   + f"). {reasons}")
    return Certificate.refuse("none of paper 000, Theorems 1-5 or a checked metric", reasons,
                              details)
