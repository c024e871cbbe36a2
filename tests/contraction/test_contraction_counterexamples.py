"""Paper 000's counterexamples as executable facts (Theorem 7; the remark after Theorem 1)."""

import numpy as np
import pytest
from contraction_helpers import rnn_jacobians, worst_lmi
from hypothesis import given
from hypothesis import strategies as st

from stablernn.contraction import (
    certify_matrix,
    no_common_metric,
    theorem1_remark_counterexample,
    theorem7_counterexample,
    verify_metric,
)


@pytest.mark.parametrize("c", [2.0, 2.5, 4.0, 10.0])
def test_theorem7_no_constant_metric(c):
    example = theorem7_counterexample(c)
    assert example.holds
    assert example.facts["linear_contracting_in_identity"]
    assert example.facts["no_constant_metric"]
    # the residual is 2 (c - 2) I, positive semidefinite
    np.testing.assert_allclose(example.certificate.residual, 2 * (c - 2) * np.eye(2))
    # and the matrix is, consistently, not certified
    assert not certify_matrix(example.weight).contracting


@given(st.integers(0, 2**32 - 1), st.floats(2.0, 20.0))
def test_theorem7_random_metrics_all_fail(seed, c):
    """No metric drawn at random works at both slope patterns (the dual certificate says none does)."""
    rng = np.random.default_rng(seed)
    w = np.array([[0.0, -c], [c, 0.0]])
    jacobians = rnn_jacobians(w, np.array([[1.0, 0.0], [0.0, 1.0]]))
    for _ in range(50):
        e = rng.normal(size=(2, 2))
        metric = e @ e.T + 1e-3 * np.eye(2)
        assert worst_lmi(jacobians, metric, 0.0) >= -1e-9


def test_theorem7_below_threshold_identity_works():
    example = theorem7_counterexample(1.5)
    assert not example.holds
    assert example.facts["identity_rate"] == pytest.approx(1 - 1.5 / 2, abs=1e-9)
    # slope bound scales c: g c >= 2 again
    assert theorem7_counterexample(1.5, slope_bound=2.0).holds


def test_theorem7_strict_slopes_variant():
    """The paper's second variant: W = [[0,-4],[4,0]], D in {diag(1, eps), diag(eps, 1)}, eps = 0.5."""
    w = np.array([[0.0, -4.0], [4.0, 0.0]])
    jacobians = rnn_jacobians(w, np.array([[1.0, 0.5], [0.5, 1.0]]))
    certificate = no_common_metric(jacobians, [[[1.0, 1.0], [1.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]]])
    assert certificate.proven


def test_no_common_metric_rejects_bad_multipliers():
    jacobians = -np.eye(2)[None].repeat(2, 0)
    assert not no_common_metric(jacobians, np.zeros((2, 2, 2))).proven
    assert not no_common_metric(jacobians, np.eye(2)[None].repeat(2, 0)).proven
    with pytest.raises(ValueError, match="shape"):
        no_common_metric(np.eye(2), np.eye(2))


def test_theorem1_remark():
    example = theorem1_remark_counterexample()
    assert example.holds
    facts = example.facts
    assert facts["linear_contracting_in_identity"]
    assert max(facts["eigenvalues_at_D_0_1"]) == pytest.approx(0.25)
    assert not facts["nonlinear_contracting_in_identity"]
    assert not facts["theorem1_holds"]
    assert facts["theorem2_rate"] == pytest.approx(1 - (-9 + np.sqrt(106)) / 2, abs=1e-6)
    assert facts["diag_1_2_exact"] and facts["diag_1_2_rate"] > 0
    identity = verify_metric(example.weight, 1.0, np.eye(2))
    assert identity.exact and identity.violation is not None
    certificate = certify_matrix(example.weight)
    assert certificate.contracting and certificate.condition == "paper 000, Theorem 2"


def test_paper002_theorem1b_has_no_quadratic_lyapunov_function():
    from stablernn.contraction import certify_lipschitz, theorem1b_counterexample

    example = theorem1b_counterexample()
    assert example.holds
    assert example.facts["hypothesis_b_holds"] and example.facts["no_quadratic_lyapunov_function"]
    assert example.facts["residual_min_eigenvalue"] > 1.0  # far from the rounding level
    a = np.array(example.facts["A"])
    assert not certify_lipschitz(a, example.weight).contracting
