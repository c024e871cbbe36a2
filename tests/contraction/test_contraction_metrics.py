"""Metrics: Lyapunov solves, the closed-form diagonal metric, diagonal scalings, the check engine."""

import numpy as np
import pytest
import torch
from contraction_helpers import random_hurwitz_metzler, rnn_jacobians, worst_lmi
from hypothesis import given
from hypothesis import strategies as st

from stablernn.contraction import (
    MetricError,
    check_family_metric,
    comparison_bound,
    diagonal_norm_metric,
    lyapunov_metric,
    metzler_diagonal_metric,
    rnn_family,
    verify_metric,
)
from stablernn.contraction.verification import all_vertices


def test_closed_form_diagonal_metric_on_thousands_of_hurwitz_metzler_matrices():
    rng = np.random.default_rng(2024)
    for _ in range(3000):
        n = int(rng.integers(1, 16))
        a = random_hurwitz_metzler(rng, n)
        p = metzler_diagonal_metric(a)
        assert np.all(np.diag(p) > 0) and np.count_nonzero(p - np.diag(np.diag(p))) == 0
        lyapunov = p @ a + a.T @ p
        root = 1 / np.sqrt(np.diag(p))
        assert np.linalg.eigvalsh(root[:, None] * lyapunov * root[None, :]).max() < 0


@given(st.integers(0, 2**32 - 1), st.integers(1, 10), st.floats(0.05, 0.99))
def test_shifted_closed_form_gives_the_shift_as_rate(seed, n, fraction):
    rng = np.random.default_rng(seed)
    a = random_hurwitz_metzler(rng, n)
    abscissa = np.linalg.eigvals(a).real.max()
    shift = -fraction * abscissa
    p = metzler_diagonal_metric(a, shift=shift)
    # P A + A^T P <= -2 shift P
    root = 1 / np.sqrt(np.diag(p))
    value = np.linalg.eigvalsh(root[:, None] * (p @ a + a.T @ p + 2 * shift * p) * root[None, :]).max()
    assert value < 1e-9 * (1 + np.abs(a).max())


def test_closed_form_rejects_non_metzler_and_non_hurwitz():
    with pytest.raises(ValueError, match="Metzler"):
        metzler_diagonal_metric([[-1.0, -0.5], [0.2, -1.0]])
    with pytest.raises(MetricError, match="not Hurwitz"):
        metzler_diagonal_metric([[0.5, 1.0], [1.0, -1.0]])


@given(st.integers(0, 2**32 - 1), st.integers(1, 12))
def test_lyapunov_metric_solves_the_equation(seed, n):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    a -= (np.linalg.eigvals(a).real.max() + rng.uniform(0.05, 2)) * np.eye(n)
    e = rng.normal(size=(n, n))
    q = e @ e.T + np.eye(n)
    m = lyapunov_metric(torch.tensor(a), q)
    np.testing.assert_allclose(m @ a + a.T @ m, -q, atol=1e-8 * np.abs(m).max() * (1 + np.abs(a).max()))
    assert np.linalg.eigvalsh(m).min() > 0


def test_lyapunov_metric_refuses_unstable():
    with pytest.raises(MetricError, match="not Hurwitz"):
        lyapunov_metric(np.eye(2))


def test_diagonal_norm_metric_beats_identity():
    # W = Theta^-1 U S V^T Theta: identity norm can be large, scaled norm small
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    theta = np.array([1.0, 10.0, 0.1, 3.0, 0.3])
    w = (u * 0.8) @ np.eye(5) * (theta[None, :] / theta[:, None])
    assert np.linalg.norm(w, 2) > 1
    found = diagonal_norm_metric(w, 1.0, method="descent")
    assert found.scaled_norm < 0.81 and not found.infeasible


@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.floats(0.2, 3.0), st.floats(0.02, 2.0))
def test_exact_check_matches_brute_force(seed, n, g, magnitude):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, n)) * magnitude
    e = rng.normal(size=(n, n))
    metric = e @ e.T + 0.5 * np.eye(n) if rng.random() < 0.5 else np.diag(np.exp(rng.normal(size=n)))
    family = rnn_family(w, g)
    check = check_family_metric(family, metric)
    assert check.exact
    # brute force over the vertices: max_d lambda_max(M^{-1/2} sym(M J) M^{-1/2})
    worst = worst_lmi(rnn_jacobians(w, all_vertices(family)), metric, 0.0) / 2
    assert check.rate == pytest.approx(-worst, abs=1e-8 * (1 + abs(worst)))
    # no interior point is worse than the vertices (convexity)
    interior = rng.uniform(0, g, (300, n))
    assert worst_lmi(rnn_jacobians(w, interior), metric, 0.0) / 2 <= worst + 1e-9 * (1 + abs(worst))
    # the sound bounds are never better than the exact value
    bounded = check_family_metric(family, metric, max_vertices=1)
    assert bounded.rate <= check.rate + 1e-9
    if np.count_nonzero(metric - np.diag(np.diag(metric))) == 0:
        assert -comparison_bound(family, metric) <= check.rate + 1e-9
    if not check.contracting and check.violation is not None:
        jac = family.jacobian(check.violation)
        assert worst_lmi(jac[None], metric, 0.0) >= -1e-9


def test_bound_path_reports_violation_for_expanding_matrix():
    w = 3 * np.eye(20)
    check = verify_metric(w, 1.0, np.eye(20), max_vertices=1)
    assert not check.contracting
    check = verify_metric(w + 0.01 * np.ones((20, 20)), 1.0, np.eye(20), max_vertices=1)
    assert not check.contracting and check.violation is not None and check.worst_found > 0


def test_sign_definite_columns_make_large_checks_exact():
    # Theorem 3's metric: M W diagonal negative, exact at any size
    rng = np.random.default_rng(0)
    e = rng.normal(size=(40, 40))
    w = -(e @ e.T) - np.eye(40)
    check = verify_metric(w, 2.0, np.linalg.inv(-w))
    assert check.exact and check.rate == pytest.approx(1.0, abs=1e-6)
