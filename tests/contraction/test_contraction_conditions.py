"""Paper 000, Theorems 1-6: holds exactly when the hypothesis holds; when True, the LMI holds."""

import numpy as np
import pytest
from contraction_helpers import assert_rnn_lmi
from hypothesis import given
from hypothesis import strategies as st

from stablernn.contraction import (
    certify_matrix,
    relaxed_absolute,
    theorem1,
    theorem1_diagonal_metric,
    theorem2,
    theorem3,
    theorem4,
    theorem5,
    theorem6_first_inequality,
)

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 8)
slopes = st.floats(0.2, 3.0)
# away from the boundary of each hypothesis: "margin" in (0.05, 0.95) inside, (1.05, 3) outside
inside = st.floats(0.05, 0.95)
outside = st.floats(1.05, 3.0)


def _sparse(rng, n):
    w = rng.uniform(-1, 1, (n, n)) * (rng.random((n, n)) < rng.uniform(0.2, 1.0))
    if rng.random() < 0.5:  # negative self weights exercise the diagonal relaxation
        w[np.diag_indices(n)] = -rng.exponential(3.0, n)
    return w


def _perron(matrix):
    return float(np.abs(np.linalg.eigvals(matrix)).max())


@given(seeds, sizes, slopes, st.one_of(inside, outside))
def test_theorem1_holds_iff_comparison_hurwitz(seed, n, g, target):
    rng = np.random.default_rng(seed)
    w = _sparse(rng, n)
    radius = _perron(g * relaxed_absolute(w))
    if radius == 0:
        w[0, 0] = 1.0
        radius = _perron(g * relaxed_absolute(w))
    w = w * target / radius  # g|W|' has Perron root `target`, so g|W|' - I is Hurwitz iff target < 1
    result = theorem1(w, g)
    assert result.holds == (target < 1)
    assert result.exact
    if result.holds:
        assert result.contracting and result.rate > 0
        metric = result.metric
        assert np.count_nonzero(metric - np.diag(np.diag(metric))) == 0  # diagonal
        assert_rnn_lmi(w, g, metric, result.rate, rng)
        # the rate of the comparison system is at most 1 - target (Perron) and at least > 0
        assert result.rate <= 1 + 1e-9


def test_theorem1_diagonal_metric_returns_tuple_and_raises():
    w = np.array([[0.0, 0.5], [0.3, 0.0]])
    metric, rate = theorem1_diagonal_metric(w, 1.0)
    assert metric.shape == (2, 2) and rate > 0
    with pytest.raises(ValueError, match="Theorem 1"):
        theorem1_diagonal_metric(3 * np.eye(2), 1.0)


def test_theorem1_diagonal_relaxation():
    # a large negative self weight does not count against Theorem 1
    w = np.array([[-50.0, 0.4], [0.4, 0.0]])
    assert theorem1(w).holds
    # a positive one does
    assert not theorem1(np.array([[1.2, 0.0], [0.0, 0.0]])).holds


@given(seeds, sizes, slopes, st.one_of(inside, outside, st.floats(-3.0, -0.05)))
def test_theorem2_holds_iff_symmetric_and_gw_below_identity(seed, n, g, target):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, n))
    w = 0.5 * (s + s.T)
    values, vectors = np.linalg.eigh(w)
    values = values - values[-1] + target / g  # g lambda_max(W) = target
    w = (vectors * values) @ vectors.T
    w = 0.5 * (w + w.T)
    result = theorem2(w, g)
    assert result.holds == (target < 1)
    if result.holds:
        assert result.contracting
        expected = 1.0 if target < 0 else 1.0 - target
        if target >= 0.01:
            assert result.rate == pytest.approx(expected, abs=1e-6)
        assert_rnn_lmi(w, g, result.metric, result.rate, rng)


@given(seeds, st.integers(2, 6))
def test_theorem2_rejects_nonsymmetric(seed, n):
    rng = np.random.default_rng(seed)
    w = 0.1 * rng.normal(size=(n, n))
    w[0, 1] += 0.5
    result = theorem2(w, 1.0)
    assert not result.holds and "not symmetric" in result.reason


def _theorem3_instance(rng, n, definite: bool):
    p1 = np.exp(rng.uniform(-2, 2, n))
    p2 = np.exp(rng.uniform(-2, 2, n))
    e = rng.normal(size=(n, n))
    q = e @ e.T + 0.1 * np.eye(n)
    if not definite:
        values, vectors = np.linalg.eigh(q)
        values[0] = -rng.uniform(0.1, 2.0)
        q = (vectors * values) @ vectors.T
    q = 0.5 * (q + q.T)
    return p1, q, p2, -(p1[:, None] * q * p2[None, :])


@given(seeds, sizes, slopes, st.booleans())
def test_theorem3_search_holds_iff_factorizable(seed, n, g, definite):
    rng = np.random.default_rng(seed)
    *_, w = _theorem3_instance(rng, n, definite)
    result = theorem3(w, g)
    assert result.holds == definite
    if definite:
        assert result.rate == pytest.approx(1.0, abs=1e-6)
        assert_rnn_lmi(w, g, result.metric, result.rate, rng)


@given(seeds, sizes, slopes)
def test_theorem3_with_given_factors(seed, n, g):
    rng = np.random.default_rng(seed)
    p1, q, p2, w = _theorem3_instance(rng, n, True)
    result = theorem3(w, g, p1=p1, q=q, p2=np.diag(p2))
    assert result.holds and result.rate == pytest.approx(1.0, abs=1e-6)
    expected = np.linalg.inv(p1[:, None] * q * p1[None, :])
    np.testing.assert_allclose(result.metric, expected / np.abs(expected).max(), rtol=1e-6, atol=1e-9)
    assert_rnn_lmi(w, g, result.metric, result.rate, rng)
    wrong = theorem3(w + 0.1, g, p1=p1, q=q, p2=p2)
    assert not wrong.holds


def test_theorem3_rejects_generic_and_partial_factors():
    rng = np.random.default_rng(0)
    assert not theorem3(rng.normal(size=(4, 4))).holds
    with pytest.raises(ValueError, match="together"):
        theorem3(-np.eye(2), p1=np.ones(2))


@given(seeds, sizes, slopes, st.one_of(inside, outside, st.floats(-3, 0)), st.booleans(), st.floats(0.01, 20))
def test_theorem4_holds_iff_triangular_and_hurwitz(seed, n, g, target, lower, coupling):
    rng = np.random.default_rng(seed)
    w = np.tril(rng.normal(size=(n, n)) * coupling, -1)
    diagonal = rng.uniform(-3, 0, n) / g
    diagonal[rng.integers(n)] = target / g  # g max W_ii = max(target, ...)
    w += np.diag(diagonal)
    if not lower:
        w = w.T
    top = g * np.diag(w).max()
    result = theorem4(w, g)
    assert result.holds == (top < 1)
    if result.contracting:
        assert_rnn_lmi(w, g, result.metric, result.rate, rng)
        assert result.rate <= 1 - max(top, 0) + 1e-9
    if result.holds and n > 1:
        full = w.copy()
        full[0, -1] = full[-1, 0] = 1.0
        assert not theorem4(full, g).holds


@given(seeds, sizes, slopes, st.floats(0.05, 0.6))
def test_theorem5_finds_a_metric_when_one_exists(seed, n, g, margin):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(n, n)))
    sigma = rng.uniform(0, (1 - margin) / g, n)
    theta = np.exp(rng.uniform(-2, 2, n))
    w = (u * sigma) @ v.T * (theta[None, :] / theta[:, None])  # Theta^-1 U S V^T Theta
    result = theorem5(w, g, method="descent")
    assert result.holds and result.contracting
    p = result.metric
    assert np.linalg.eigvalsh(g**2 * w.T @ p @ w - p).max() < 0
    assert result.rate >= 1 - g * result.details["scaled_norm"] - 1e-9
    assert_rnn_lmi(w, g, p, result.rate, rng)


@given(seeds, sizes, slopes, outside)
def test_theorem5_fails_when_spectral_radius_too_large(seed, n, g, target):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, n))
    w *= target / (g * np.abs(np.linalg.eigvals(w)).max())
    result = theorem5(w, g)
    assert not result.holds and result.exact and "rho" in result.reason


@given(seeds, sizes, slopes, st.one_of(inside, outside))
def test_theorem6_first_inequality(seed, n, g, target):
    rng = np.random.default_rng(seed)
    w = _sparse(rng, n)
    radius = _perron(g * relaxed_absolute(w)) or 1.0
    w = w * target / radius
    result = theorem6_first_inequality(w, g)
    assert result.metric is None and result.rate is None  # never certifies
    assert not result.to_certificate().contracting
    if target < 1:  # Theorem 1's metric satisfies the first inequality
        assert result.holds
    if result.holds:
        p = np.diag(result.details["P"])
        a = g * w - np.eye(n)
        c = result.details["c"]
        root = np.diag(1 / np.sqrt(np.diag(p)))
        assert np.linalg.eigvalsh(root @ (p @ a + a.T @ p + c * p) @ root).max() <= 1e-9
    # not Hurwitz -> not diagonally stable -> never holds
    if np.linalg.eigvals(g * w - np.eye(n)).real.max() > 1e-9:
        assert not result.holds


def test_theorem6_with_given_p():
    w = np.array([[0.0, -2.0], [2.0, 0.0]])
    assert theorem6_first_inequality(w, 1.0, p=np.ones(2)).holds  # the linear condition of Theorem 7


@given(seeds, sizes, slopes)
def test_certify_matrix_is_sound(seed, n, g):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, n)) * rng.uniform(0.05, 1.5) / g
    certificate = certify_matrix(w, g)
    if certificate.contracting:
        assert certificate.rate > 0 and certificate.max_euler_step > 0
        assert_rnn_lmi(w, g, certificate.metric, certificate.rate, rng)
    else:
        assert certificate.metric is None and certificate.rate is None and certificate.reason


def test_certify_matrix_prefers_theorem3_rate_one():
    s = np.random.default_rng(1).normal(size=(4, 4))
    w = -(s @ s.T) - 0.1 * np.eye(4)
    certificate = certify_matrix(w)
    assert certificate.condition == "paper 000, Theorem 3"
    assert certificate.rate == pytest.approx(1.0, abs=1e-6)


def test_large_matrix_uses_sound_bounds():
    rng = np.random.default_rng(3)
    n = 60
    w = rng.uniform(-1, 1, (n, n)) * (rng.random((n, n)) < 0.03)
    np.fill_diagonal(w, 0)
    w *= 0.8 / np.abs(np.linalg.eigvals(np.abs(w))).max()
    result = theorem1(w)
    assert result.contracting and not result.details["check_method"].startswith("exact")
    assert_rnn_lmi(w, 1.0, result.metric, result.rate, rng)


@given(seeds, st.integers(1, 7), slopes, st.sampled_from(["sparse", "symmetric", "factor", "triangular", "svd"]))
def test_derived_rates_never_exceed_the_exact_worst_case(seed, n, g, kind):
    """Every rate derived in a docstring is below the exact vertex worst case for its metric."""
    rng = np.random.default_rng(seed)
    if kind == "sparse":
        w = _sparse(rng, n)
        w *= rng.uniform(0.1, 0.95) / max(_perron(g * relaxed_absolute(w)), 1e-9)
        result = theorem1(w, g)
    elif kind == "symmetric":
        s = rng.normal(size=(n, n))
        w = (s + s.T) * rng.uniform(0.05, 1.0) / g
        result = theorem2(w, g)
    elif kind == "factor":
        *_, w = _theorem3_instance(rng, n, True)
        result = theorem3(w, g)
    elif kind == "triangular":
        w = np.tril(rng.normal(size=(n, n)), -1) + np.diag(rng.uniform(-2, 0.9, n)) / g
        result = theorem4(w, g)
    else:
        u, _ = np.linalg.qr(rng.normal(size=(n, n)))
        w = u * rng.uniform(0, 0.9 / g, n)
        result = theorem5(w, g)
    if result.contracting:
        assert result.details["rate_exact"]  # n <= 7: always exact
        assert "warning" not in result.details, result.details["warning"]
