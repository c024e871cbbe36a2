r"""Linear matrix inequalities with cvxpy (optional extra: ``pip install 'stablernn[lmi]'``).

cvxpy is imported only inside these functions. Every solution is re-checked by the caller
with numpy; the solver is trusted only for reporting infeasibility (up to its tolerance).

- :func:`theorem5_lmi`: diagonal ``P >= I`` with ``g^2 W^T P W - P <= -I`` (paper 000, Theorem 5).
- :func:`diagonal_stability_lmi`: diagonal ``P >= I`` with ``P A + A^T P <= -I``
  (the first inequality of paper 000, Theorem 6, with ``A = gW - I``).
- :func:`common_metric_lmi`: a full ``M >= I`` with ``M J_v + J_v^T M + 2 rate M <= -eps I`` at
  every vertex ``J_v`` of a Jacobian family (exact for the family by convexity; small N only).
"""

from __future__ import annotations

import numpy as np

LMI_EXTRA_MESSAGE = (
    "this check needs cvxpy, the optional extra 'lmi' of stablernn: "
    "pip install 'stablernn[lmi]' (or pip install cvxpy)"
)


def require_cvxpy():
    """Import cvxpy or raise an ImportError that names the extra ``lmi``."""
    try:
        import cvxpy
    except ImportError as error:
        raise ImportError(LMI_EXTRA_MESSAGE) from error
    return cvxpy


def _solve(cp, problem) -> str:
    import warnings

    with warnings.catch_warnings():  # "inaccurate" solutions are re-checked by the caller anyway
        warnings.simplefilter("ignore", UserWarning)
        for solver in ("CLARABEL", "SCS"):
            if solver in cp.installed_solvers():
                try:
                    problem.solve(solver=solver)
                except cp.error.SolverError:
                    continue
                return str(problem.status)
        problem.solve()
    return str(problem.status)


def theorem5_lmi(weight: np.ndarray, slope_bound: float) -> tuple[np.ndarray | None, str]:
    """Diagonal p with ``g^2 W^T diag(p) W - diag(p) <= -I``, ``p >= 1`` (homogeneous, so this
    is feasible iff the strict Theorem 5 inequality is). Returns (p or None, solver status)."""
    cp = require_cvxpy()
    n = weight.shape[0]
    p = cp.Variable(n)
    lhs = slope_bound**2 * weight.T @ cp.diag(p) @ weight - cp.diag(p)
    constraints = [p >= 1, 0.5 * (lhs + lhs.T) << -np.eye(n)]
    status = _solve(cp, cp.Problem(cp.Minimize(cp.sum(p)), constraints))
    if status in ("optimal", "optimal_inaccurate") and p.value is not None:
        return np.maximum(np.asarray(p.value, float), 1e-300), status
    return None, "infeasible" if "infeasible" in status else status


def diagonal_stability_lmi(a: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Diagonal p with ``diag(p) A + A^T diag(p) <= -I``, ``p >= 1``."""
    cp = require_cvxpy()
    n = a.shape[0]
    p = cp.Variable(n)
    lhs = cp.diag(p) @ a + a.T @ cp.diag(p)
    constraints = [p >= 1, 0.5 * (lhs + lhs.T) << -np.eye(n)]
    status = _solve(cp, cp.Problem(cp.Minimize(cp.sum(p)), constraints))
    if status in ("optimal", "optimal_inaccurate") and p.value is not None:
        return np.asarray(p.value, float), status
    return None, "infeasible" if "infeasible" in status else status


def common_metric_lmi(
    jacobians: np.ndarray, rate: float = 0.0, margin: float = 1e-6
) -> tuple[np.ndarray | None, str]:
    """M >= I with ``M J + J^T M + 2 rate M <= -margin I`` for every J in ``jacobians`` (B, N, N).

    For a Jacobian family pass its vertices (:func:`stablernn.contraction.verification.
    all_vertices`): the condition is affine in the slopes, so it holds on the whole box iff it
    holds at the vertices. Returns (M or None, solver status).
    """
    cp = require_cvxpy()
    n = jacobians.shape[-1]
    m = cp.Variable((n, n), symmetric=True)
    constraints = [m >> np.eye(n)]
    for j in jacobians:
        lhs = m @ j + j.T @ m + 2 * rate * m
        constraints.append(0.5 * (lhs + lhs.T) << -margin * np.eye(n))
    status = _solve(cp, cp.Problem(cp.Minimize(cp.trace(m)), constraints))
    if status in ("optimal", "optimal_inaccurate") and m.value is not None:
        return np.asarray(m.value, float), status
    return None, "infeasible" if "infeasible" in status else status
