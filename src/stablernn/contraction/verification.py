r"""Checking a metric against every Jacobian of a family: exact where possible, sound otherwise.

For a metric ``M = S^2`` (S the symmetric square root) and the generalized Jacobian
``F(d) = S J(d) S^{-1}``,

    M J + J^T M <= -2 lambda M   for all d   <=>   max_d lambda_max(sym F(d)) <= -lambda,

(``sym X = (X + X^T) / 2``; ``lambda_max(sym F)`` is the log-norm ``mu_M(J)``). The best rate
in the metric is therefore ``-max_d mu_M(J(d))``. How it is computed:

**Exact (vertex enumeration).** ``d -> sym F(d)`` is affine and ``lambda_max`` is convex, so the
maximum over the box ``[low, high]^K`` is attained at one of its ``2^K`` vertices. Columns whose
contribution ``sym(S l_k r_k S^{-1})`` is semidefinite (``S l_k`` parallel to ``S^{-1} r_k``,
e.g. Theorem 3's metric, where ``M W`` is diagonal) need not be enumerated: by Loewner
monotonicity their worst slope is ``high`` (positive semidefinite) or ``low`` (negative
semidefinite). The remaining ``2^k`` vertices are enumerated when ``2^k <= max_vertices``.

**Sound bounds (large N).** Otherwise the worst case is bounded above by the smaller of

- *midpoint bound*: ``d = c + e`` with ``c = (low + high) / 2``, ``|e_k| <= r = (high - low)/2``:
  ``mu(F(d)) <= lambda_max(sym F(c)) + r ||S left|| ||right S^{-1}||`` (for a diagonal metric and
  K = N the slopes commute with S: ``r ||S left S^{-1}|| ||S right S^{-1}||``);
- *comparison bound* (diagonal metric ``P`` only; the argument of paper 000, proof of
  Theorem 1): ``dx^T P J dx <= |dx|^T P C |dx|`` with ``C_ii = max_d J_ii`` and
  ``C_ij = max_d |J_ij|`` (i != j), so ``mu_P(J(d)) <= lambda_max(P^{-1/2} sym(P C) P^{-1/2})``.

Both are upper bounds, so the rate they give is a valid (possibly conservative) lower bound;
a metric that fails them is not shown to fail. To show failure, vertices are sampled (and, for
small N, improved greedily); a vertex with ``mu >= 0`` proves the metric does not contract for
an activation whose slopes reach the box's corners.

A rounding allowance of ``N * 256 eps * scale`` is added to every computed eigenvalue, so a
certified rate never rests on the last bits of a floating-point computation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from stablernn.contraction._inputs import check_metric, rounding, sym
from stablernn.contraction.family import JacobianFamily, rnn_family

DEFAULT_MAX_VERTICES = 4096
_PARALLEL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class MetricCheck:
    """The result of checking a metric against a Jacobian family.

    Attributes:
        contracting: ``rate > 0``.
        rate: a lower bound on the contraction rate in this metric (may be negative):
            ``M J + J^T M <= -2 rate M`` for every J of the family. Exact (up to rounding)
            when ``exact`` is True.
        exact: whether ``rate`` is the exact worst case over the family.
        method: how ``rate`` was obtained.
        worst_found: the largest log-norm ``mu_M(J)`` found at a vertex (a lower bound on the
            true worst case), or None when not searched (the bound already proved contraction).
        violation: slopes ``d`` of a vertex with ``mu_M(J(d)) >= 0`` (a proof that the metric
            does not work), or None.
    """

    contracting: bool
    rate: float
    exact: bool
    method: str
    worst_found: float | None = None
    violation: np.ndarray | None = None
    round_off: float = 0.0


class _Transformed:
    """``F(d) = S J(d) S^{-1}`` pieces for ``M = S^2``."""

    def __init__(self, family: JacobianFamily, metric: np.ndarray) -> None:
        off = metric - np.diag(np.diag(metric))
        self.diagonal = not np.any(off)
        if self.diagonal:
            s = np.sqrt(np.diag(metric))
            self.scale = s
            self.base = s[:, None] * family.base / s[None, :]
            self.left = s[:, None] * family.left
            self.right = family.right / s[None, :]
        else:
            values, vectors = np.linalg.eigh(metric)
            root = (vectors * np.sqrt(values)) @ vectors.T
            inverse_root = (vectors / np.sqrt(values)) @ vectors.T
            self.scale = None
            self.base = root @ family.base @ inverse_root
            self.left = root @ family.left
            self.right = family.right @ inverse_root
        self.family = family

    def generalized(self, slopes: np.ndarray) -> np.ndarray:
        d = np.asarray(slopes, float)
        if d.ndim == 1:
            return self.base + (self.left * d) @ self.right
        return self.base + np.einsum("ik,bk,kj->bij", self.left, d, self.right)

    def perturbation_norm(self) -> float:
        """Upper bound on ``||S left E right S^{-1}||`` for ``|E| <= I`` diagonal."""
        bound = np.linalg.norm(self.left, 2) * np.linalg.norm(self.right, 2)
        fam = self.family
        if self.diagonal and fam.slopes == fam.size:
            s = self.scale
            commuted = np.linalg.norm(s[:, None] * fam.left / s[None, :], 2) * np.linalg.norm(
                s[:, None] * fam.right / s[None, :], 2
            )
            bound = min(bound, commuted)
        return float(bound)


def _batched_max_eig(matrices: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(matrices)[..., -1]


def _vertex_chunks(count: int, low: float, high: float, size: int):
    """All ``2^count`` vertices of ``[low, high]^count`` as (B, count) arrays, in chunks."""
    total = 1 << count
    chunk = max(1, min(total, 2_000_000 // max(1, size * size)))
    bits = np.arange(count)
    for start in range(0, total, chunk):
        index = np.arange(start, min(total, start + chunk))
        mask = ((index[:, None] >> bits[None, :]) & 1).astype(bool)
        yield np.where(mask, high, low)


def comparison_bound(family: JacobianFamily, diagonal_metric: np.ndarray) -> float:
    """``max_d mu_P(J(d))`` bounded by the comparison matrix (paper 000, proof of Theorem 1).

    For a positive diagonal P: ``dx^T P J dx <= |dx|^T P C |dx|`` with ``C_ii = max_d J_ii``
    and ``C_ij = max_d |J_ij|``; hence ``mu_P(J(d)) <= lambda_max(P^{-1/2} sym(P C) P^{-1/2})``
    for every d. With ``J = -I + W D``, ``C = g|W|' - I`` where ``|W|'_ii = max(W_ii, 0)``:
    exactly the matrix of Theorem 1 (with its diagonal relaxation).
    """
    p = np.diag(diagonal_metric).astype(float)
    low_part, high_part = _slope_part_range(family)
    upper = family.base + high_part
    lower = family.base + low_part
    comparison = np.maximum(np.abs(upper), np.abs(lower))
    np.fill_diagonal(comparison, np.diag(upper))
    root = np.sqrt(p)
    normalized = sym(p[:, None] * comparison) / root[:, None] / root[None, :]
    value = float(np.linalg.eigvalsh(normalized)[-1])
    return value + family.size * rounding(np.abs(normalized).max())


def _slope_part_range(family: JacobianFamily) -> tuple[np.ndarray, np.ndarray]:
    """Entrywise range ``[min_d, max_d]`` of ``left diag(d) right`` over the box."""
    left, right, low, high = family.left, family.right, family.low, family.high
    n, k = left.shape
    if k == n and np.array_equal(right, np.eye(n)):
        a, b = low * left, high * left
        return np.minimum(a, b), np.maximum(a, b)
    if k == n and np.array_equal(left, np.eye(n)):
        a, b = low * right, high * right
        return np.minimum(a, b), np.maximum(a, b)
    minimum = np.zeros((n, n))
    maximum = np.zeros((n, n))
    for column in range(k):
        outer = np.outer(left[:, column], right[column])
        minimum += np.minimum(low * outer, high * outer)
        maximum += np.maximum(low * outer, high * outer)
    return minimum, maximum


def check_family_metric(
    family: JacobianFamily,
    metric,
    *,
    max_vertices: int = DEFAULT_MAX_VERTICES,
    samples: int = 32,
    seed: int = 0,
) -> MetricCheck:
    """Worst case of ``M J + J^T M`` over the family: the rate the metric certifies.

    Exact by vertex enumeration when at most ``max_vertices`` vertices remain after fixing
    the semidefinite columns; otherwise the smaller of the midpoint and (diagonal metric)
    comparison bounds, which is sound but may be conservative. See the module docstring.
    """
    metric = check_metric("metric", metric, family.size)
    t = _Transformed(family, metric)
    n, k = family.size, family.slopes
    low, high = family.low, family.high
    extreme = max(abs(low), abs(high))

    fixed = sym(t.base)
    allowance = 0.0
    free: list[int] = []
    left_norms = np.linalg.norm(t.left, axis=0)
    right_norms = np.linalg.norm(t.right, axis=1)
    for column in range(k):
        if left_norms[column] == 0 or right_norms[column] == 0:
            continue
        direction = t.right[column] / right_norms[column]
        along = float(t.left[:, column] @ direction)
        across = t.left[:, column] - along * direction
        if np.linalg.norm(across) <= _PARALLEL_TOLERANCE * left_norms[column]:
            coefficient = along * right_norms[column]
            slope = high if coefficient > 0 else low
            fixed = fixed + slope * coefficient * np.outer(direction, direction)
            allowance += extreme * float(np.linalg.norm(across)) * right_norms[column]
        else:
            free.append(column)

    scale = float(np.linalg.norm(t.base, 2) + extreme * np.linalg.norm(t.left, 2) * np.linalg.norm(t.right, 2))
    round_off = n * rounding(scale)

    if len(free) <= 62 and (1 << len(free)) <= max_vertices:
        if free:
            pieces = np.stack([sym(np.outer(t.left[:, c], t.right[c])) for c in free])
            worst, worst_slopes = -np.inf, None
            for vertices in _vertex_chunks(len(free), low, high, n):
                values = _batched_max_eig(fixed + np.einsum("bk,kij->bij", vertices, pieces))
                index = int(np.argmax(values))
                if values[index] > worst:
                    worst, worst_slopes = float(values[index]), vertices[index]
        else:
            worst, worst_slopes = float(np.linalg.eigvalsh(fixed)[-1]), np.zeros(0)
        upper = worst + allowance + round_off
        violation = None
        if worst >= 0:
            violation = _full_slopes(family, t, free, worst_slopes)
        return MetricCheck(
            contracting=-upper > 0, rate=-upper, exact=True,
            method=(f"exact: {1 << len(free)} slope vertices after fixing {k - len(free)} "
                    "sign-definite columns (the log-norm is convex in the slopes)"),
            worst_found=worst, violation=violation, round_off=allowance + round_off,
        )

    center, radius = 0.5 * (low + high), 0.5 * (high - low)
    midpoint = float(np.linalg.eigvalsh(sym(t.generalized(np.full(k, center))))[-1])
    bounds = {"midpoint bound": midpoint + radius * t.perturbation_norm() + round_off}
    if t.diagonal:
        bounds["comparison bound (diagonal metric)"] = comparison_bound(family, metric)
    method, upper = min(bounds.items(), key=lambda item: item[1])
    if upper < 0:
        return MetricCheck(contracting=True, rate=-upper, exact=False, method=f"sound {method}")
    worst, worst_slopes = _search_vertices(t, samples, seed)
    violation = worst_slopes if worst >= 0 else None
    return MetricCheck(
        contracting=False, rate=-upper, exact=False, method=f"sound {method}",
        worst_found=worst, violation=violation,
    )


def _full_slopes(family, t, free, free_slopes) -> np.ndarray:
    slopes = np.empty(family.slopes)
    for column in range(family.slopes):
        along = float(t.left[:, column] @ t.right[column])
        slopes[column] = family.high if along > 0 else family.low
    slopes[free] = free_slopes
    return slopes


def _search_vertices(t: _Transformed, samples: int, seed: int) -> tuple[float, np.ndarray]:
    """Largest log-norm over sampled vertices (greedy single flips for small N)."""
    family = t.family
    rng = np.random.default_rng(seed)
    k = family.slopes
    samples = samples if family.size <= 64 else min(samples, 8)
    candidates = np.where(rng.random((max(2, samples), k)) < 0.5, family.low, family.high)
    candidates[0], candidates[1] = family.high, family.low
    values = _batched_max_eig(sym(t.generalized(candidates)))
    best = int(np.argmax(values))
    worst, slopes = float(values[best]), candidates[best].copy()
    if family.size <= 48:
        improved = True
        while improved:
            improved = False
            flips = np.repeat(slopes[None, :], k, axis=0)
            index = np.arange(k)
            flips[index, index] = np.where(slopes == family.high, family.low, family.high)
            values = _batched_max_eig(sym(t.generalized(flips)))
            best = int(np.argmax(values))
            if values[best] > worst + 1e-12:
                worst, slopes, improved = float(values[best]), flips[best].copy(), True
    return worst, slopes


def verify_metric(weight, slope_bound: float, metric, **options) -> MetricCheck:
    """Check a metric for paper 000, eq. 1: worst case of ``M J + J^T M`` over ``J = -I + W D``.

    ``D = diag(d)``, ``d_i in [0, g]``. Exact (all vertices of the slope box; the log-norm is
    convex in d) when ``2^k <= max_vertices`` for the k columns that are not sign-definite in
    the metric; otherwise a sound upper bound (midpoint or comparison). The returned
    ``rate`` satisfies ``M J + J^T M <= -2 rate M`` for every such J. Options as
    :func:`check_family_metric`.
    """
    return check_family_metric(rnn_family(weight, slope_bound), metric, **options)


def family_norm_bound(
    family: JacobianFamily, metric, *, max_vertices: int = DEFAULT_MAX_VERTICES
) -> tuple[float, bool]:
    """``sup_d ||J(d)||_M = sup_d ||S J(d) S^{-1}||_2`` (exact over vertices, or a bound).

    The norm is convex in d, so the supremum is at a vertex; with more than ``max_vertices``
    vertices, ``||F(c)|| + r * (perturbation norm)`` bounds it. Returns (value, exact).
    """
    metric = check_metric("metric", metric, family.size)
    t = _Transformed(family, metric)
    k = family.slopes
    if k <= 62 and (1 << k) <= max_vertices:
        worst = 0.0
        for vertices in _vertex_chunks(k, family.low, family.high, family.size):
            worst = max(worst, float(np.linalg.norm(t.generalized(vertices), 2, axis=(1, 2)).max()))
        return worst * (1 + rounding()), True
    center, radius = 0.5 * (family.low + family.high), 0.5 * (family.high - family.low)
    value = np.linalg.norm(t.generalized(np.full(k, center)), 2) + radius * t.perturbation_norm()
    return float(value) * (1 + rounding()), False


def all_vertices(family: JacobianFamily) -> np.ndarray:
    """Every vertex of the slope box (for tests and tiny examples): (2^K, K)."""
    return np.array(list(itertools.product((family.low, family.high), repeat=family.slopes)))
