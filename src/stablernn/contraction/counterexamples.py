r"""The counterexamples of paper 000 as executable facts.

**No common metric: a dual certificate.** For Jacobians ``J_1, ..., J_m``, there is no
``M > 0`` with ``M J_k + J_k^T M < 0`` for every k if there are positive semidefinite
``Z_1, ..., Z_m``, not all zero, with

    sum_k (J_k Z_k + Z_k J_k^T) >= 0.

Proof: ``sum_k tr(Z_k (M J_k + J_k^T M)) = tr(M sum_k (J_k Z_k + Z_k J_k^T)) >= 0`` (trace of a
product of positive semidefinite matrices), while each term on the left is ``<= 0`` and the
one with ``Z_k != 0`` is ``< 0``. (This is the Lagrange dual of the LMI, so such Z exist
whenever the LMI is infeasible.) :func:`no_common_metric` checks such a certificate
numerically.

**Theorem 7** (``W = [[0, -c], [c, 0]]``, ``g c >= 2``): ``g W_sym - I = -I < 0``, yet with
``D_1 = diag(g, 0)``, ``D_2 = diag(0, g)`` the multipliers ``Z_1 = [[1, 1], [1, 1]]``,
``Z_2 = [[1, -1], [-1, 1]]`` give ``sum_k (J_k Z_k + Z_k J_k^T) = 2 (g c - 2) I >= 0``: no constant
metric works for both slope patterns (the paper proves it by case analysis of the entries of
M). For ``g c < 2`` the identity metric does work, with rate ``1 - g c / 2``.

**Remark after Theorem 1** (``W = [[-9, 2.5], [2.5, 0]]``, g = 1): the linear system
``x' = (W - I) x`` contracts in the identity (``W_sym - I < 0``), but eq. 1 does not contract
in the identity: at ``D = diag(0, 1)``, ``sym(W D) - I = [[-1, 1.25], [1.25, -1]]`` has the
eigenvalue 1/4. Theorem 1 fails too (``|W|' - I = [[-1, 2.5], [2.5, -1]]`` has eigenvalue 1.5).
The system is nonetheless contracting: W is symmetric with ``lambda_max(W) ~ 0.652 < 1``, so
Theorem 2 applies (rate ~ 0.348), and the diagonal metric ``diag(1, 2)`` also works (checked
exactly over the four slope vertices). The counterexample is about the identity metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stablernn._checks import check_non_negative, check_positive
from stablernn.contraction._inputs import rounding, sym
from stablernn.contraction.family import rnn_family
from stablernn.contraction.verification import check_family_metric


@dataclass(frozen=True)
class NoCommonMetric:
    """A checked dual certificate that no constant metric serves all given Jacobians."""

    proven: bool
    jacobians: np.ndarray
    multipliers: np.ndarray
    residual: np.ndarray
    reason: str


def no_common_metric(jacobians, multipliers) -> NoCommonMetric:
    """Check ``Z_k >= 0``, not all zero, and ``sum_k (J_k Z_k + Z_k J_k^T) >= 0`` (see module)."""
    j = np.asarray(jacobians, float)
    z = np.asarray(multipliers, float)
    if j.ndim != 3 or j.shape[1] != j.shape[2] or z.shape != j.shape:
        raise ValueError(
            f"jacobians and multipliers must both have shape (m, N, N), got {j.shape} and {z.shape}"
        )
    residual = sum(jk @ zk + zk @ jk.T for jk, zk in zip(j, z))
    scale = max(1.0, float(np.abs(j).max() * np.abs(z).max()))
    tol = j.shape[1] * rounding(scale)
    psd = all(np.linalg.eigvalsh(sym(zk))[0] >= -tol and np.abs(zk - zk.T).max() <= tol for zk in z)
    nonzero = any(np.abs(zk).max() > tol for zk in z)
    residual_psd = float(np.linalg.eigvalsh(sym(residual))[0]) >= -tol
    proven = psd and nonzero and residual_psd
    reason = (
        "multipliers are positive semidefinite, not all zero, and sum_k (J_k Z_k + Z_k J_k^T) >= 0: "
        "no M > 0 has M J_k + J_k^T M < 0 for all k"
        if proven else
        "the multipliers do not form a certificate (not PSD, all zero, or the sum is not PSD)"
    )
    return NoCommonMetric(proven, j, z, residual, reason)


@dataclass(frozen=True)
class Counterexample:
    """A counterexample of paper 000 with its checked facts."""

    name: str
    weight: np.ndarray
    slope_bound: float
    facts: Mapping[str, Any]
    holds: bool
    reason: str
    certificate: NoCommonMetric | None = field(default=None, repr=False)


def theorem7_counterexample(c: float = 2.0, slope_bound: float = 1.0) -> Counterexample:
    """Paper 000, Theorem 7: ``W = [[0, -c], [c, 0]]``; no constant metric when ``g c >= 2``.

    ``holds`` is True when both facts check: the linear condition ``g W_sym - I < 0`` holds and
    the dual certificate (module docstring) proves that no constant metric works for
    ``D = diag(g, 0)`` and ``D = diag(0, g)``. For ``g c < 2``, ``holds`` is False and the
    identity metric's rate ``1 - g c / 2`` is reported (checked over all slope vertices).
    """
    c = check_non_negative("c", c)
    g = check_positive("g", slope_bound)
    w = np.array([[0.0, -c], [c, 0.0]])
    linear = float(np.linalg.eigvalsh(g * sym(w) - np.eye(2))[-1])
    d1, d2 = np.diag([g, 0.0]), np.diag([0.0, g])
    jacobians = np.stack([-np.eye(2) + w @ d1, -np.eye(2) + w @ d2])
    multipliers = np.array([[[1.0, 1.0], [1.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]]])
    certificate = no_common_metric(jacobians, multipliers)
    identity = check_family_metric(rnn_family(w, g), np.eye(2))
    facts = {
        "linear_condition_max_eigenvalue": linear,
        "linear_contracting_in_identity": bool(linear < 0),
        "no_constant_metric": bool(certificate.proven),
        "identity_rate": float(identity.rate),
    }
    holds = linear < 0 and certificate.proven
    if holds:
        reason = (f"g W_sym - I = -I < 0, but with g c = {g * c:g} >= 2 the multipliers "
                  "Z1 = [[1,1],[1,1]], Z2 = [[1,-1],[-1,1]] prove that no constant metric "
                  "works for both D = diag(g,0) and D = diag(0,g)")
    else:
        reason = (f"g c = {g * c:g} < 2: the identity metric works, rate {identity.rate:.4g} "
                  "(= 1 - g c / 2)")
    return Counterexample("paper 000, Theorem 7", w, g, facts, holds, reason, certificate)


def theorem1_remark_counterexample() -> Counterexample:
    """Paper 000, remark in the proof of Theorem 1: ``W = [[-9, 2.5], [2.5, 0]]``, g = 1.

    Facts checked: the linear system contracts in the identity; eq. 1 does not (eigenvalue
    1/4 at ``D = diag(0, 1)``); Theorem 1 fails; yet Theorem 2 and the diagonal metric
    ``diag(1, 2)`` certify contraction, so the failure is the identity metric's alone.
    """
    from stablernn.contraction.conditions import theorem1, theorem2

    w = np.array([[-9.0, 2.5], [2.5, 0.0]])
    family = rnn_family(w, 1.0)
    linear = np.linalg.eigvalsh(sym(w) - np.eye(2))
    at_pattern = np.linalg.eigvalsh(sym(w @ np.diag([0.0, 1.0])) - np.eye(2))
    identity = check_family_metric(family, np.eye(2))
    diagonal = check_family_metric(family, np.diag([1.0, 2.0]))
    first, second = theorem1(w), theorem2(w)
    facts = {
        "linear_identity_eigenvalues": linear.tolist(),
        "linear_contracting_in_identity": bool(linear.max() < 0),
        "eigenvalues_at_D_0_1": at_pattern.tolist(),
        "nonlinear_contracting_in_identity": bool(identity.contracting),
        "theorem1_holds": bool(first.holds),
        "theorem2_rate": float(second.rate),
        "diag_1_2_rate": float(diagonal.rate),
        "diag_1_2_exact": bool(diagonal.exact),
    }
    holds = (linear.max() < 0 and abs(at_pattern.max() - 0.25) < 1e-12
             and not identity.contracting and not first.holds)
    reason = ("the linear system contracts in the identity, eq. 1 does not (eigenvalue 1/4 at "
              "D = diag(0, 1)) and Theorem 1 fails; Theorem 2 and the metric diag(1, 2) still "
              "certify contraction")
    return Counterexample("paper 000, Theorem 1 remark", w, 1.0, facts, bool(holds), reason)


# Found by maximizing t in {M J_v + J_v^T M <= -t I, M >= 0, tr M = 1} over the 8 slope vertices
# (t* ~ -3.3: strongly infeasible) and rounding the dual multipliers to rank-one v v^T.
_THEOREM1B_A = np.array([[-1.2, 3.6, -3.8], [-4.6, -0.8, -2.9], [3.6, 2.6, -0.6]])
_THEOREM1B_W = np.array([[-1.7, 10.2, -7.6], [-10.1, -0.3, -7.5], [8.5, 7.2, -0.2]])
_THEOREM1B_VECTORS = {  # slope vertex d -> v, multiplier Z = v v^T (zero at the other vertices)
    (0.0, 1.0, 1.0): (1.0, -0.8, 0.7),
    (1.0, 0.0, 0.0): (0.8, 0.8, -0.7),
    (1.0, 0.0, 1.0): (0.6, 1.0, 0.7),
    (1.0, 1.0, 0.0): (0.2, 0.3, -0.4),
}


def theorem1b_counterexample() -> Counterexample:
    r"""Paper 002, Theorem 1 (b): its hypothesis holds, yet no quadratic Lyapunov function exists.

    For the 3 x 3 matrices ``A``, ``W`` below, ``A_sym < 0``, ``W + W^T < 0`` and
    ``A^T W + W^T A > 0`` (case (b)), but rank-one multipliers ``Z_d = v_d v_d^T`` at four slope
    vertices ``D = diag(d)``, ``d in {0, 1}^3`` prove (module docstring) that no ``P > 0`` has
    ``P (A + D W) + (A + D W)^T P < 0`` at all of them. The proof of (b) builds
    ``V = h^T P h`` (with ``P = -W^T`` from the KYP lemma, not symmetric here) and needs
    ``V' < 0`` for every monotone nonlinearity, i.e. for every slope pattern (linear pieces with
    slopes d are monotone): so that argument cannot hold for this pair. This refutes the proof,
    not the stability claim itself, and it is why :func:`stablernn.contraction.theorem1b`
    certifies only symmetric W.
    """
    from stablernn.contraction.family import lipschitz_family
    from stablernn.contraction.lipschitz import theorem1b

    a, w = _THEOREM1B_A, _THEOREM1B_W
    hypothesis = theorem1b(a, w)
    family = lipschitz_family(a, w, 1.0)
    slopes = np.array(list(_THEOREM1B_VECTORS))
    vectors = np.array(list(_THEOREM1B_VECTORS.values()))
    jacobians = family.jacobian(slopes)
    certificate = no_common_metric(jacobians, np.einsum("ki,kj->kij", vectors, vectors))
    facts = dict(hypothesis.details)
    facts.update(hypothesis_b_holds=bool(hypothesis.holds),
                 no_quadratic_lyapunov_function=bool(certificate.proven),
                 residual_min_eigenvalue=float(np.linalg.eigvalsh(sym(certificate.residual))[0]))
    holds = hypothesis.holds and certificate.proven
    reason = ("A_sym < 0, W + W^T < 0 and A^T W + W^T A > 0, but no P > 0 makes "
              "P (A + D W) + (.)^T P < 0 at the four slope vertices: the quadratic Lyapunov "
              "function of the proof of (b) does not exist")
    return Counterexample("paper 002, Theorem 1 (b)", w, 1.0,
                          dict(facts, A=a.tolist()), bool(holds), reason, certificate)
