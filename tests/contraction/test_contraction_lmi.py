"""The optional cvxpy extra ('lmi'): skipped when cvxpy is not installed."""

import numpy as np
import pytest

from stablernn.contraction import rnn_family, theorem5, theorem7_counterexample
from stablernn.contraction.verification import all_vertices

cvxpy = pytest.importorskip("cvxpy")

from stablernn.contraction.lmi import common_metric_lmi, diagonal_stability_lmi, theorem5_lmi


def test_theorem7_lmi_is_infeasible():
    example = theorem7_counterexample(2.5)
    metric, status = common_metric_lmi(example.certificate.jacobians)
    assert metric is None and status == "infeasible"


def test_theorem1_remark_has_a_common_metric():
    family = rnn_family([[-9.0, 2.5], [2.5, 0.0]], 1.0)
    metric, _ = common_metric_lmi(family.jacobian(all_vertices(family)))
    assert metric is not None


def test_theorem5_lmi_agrees_with_descent():
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(15):
        n = int(rng.integers(2, 6))
        w = rng.normal(size=(n, n)) * rng.uniform(0.2, 0.7)
        descent = theorem5(w, method="descent")
        p, _ = theorem5_lmi(w, 1.0)
        if descent.holds:
            assert p is not None  # the LMI is feasible whenever a P was found
        if p is not None:
            check = np.linalg.eigvalsh(w.T @ np.diag(p) @ w - np.diag(p)).max()
            if check < -1e-6 * p.max():
                agree += descent.holds
        else:
            assert not descent.holds
    assert agree > 0


def test_lmi_method_and_diagonal_stability():
    w = np.array([[0.0, 0.9], [0.0, 0.0]]) * 3
    assert theorem5(w, method="lmi").holds
    p, status = diagonal_stability_lmi(np.array([[-1.0, 3.0], [-3.0, -1.0]]))
    assert p is not None
    p, status = diagonal_stability_lmi(np.array([[1.0, 0.0], [0.0, -1.0]]))
    assert p is None and status == "infeasible"
