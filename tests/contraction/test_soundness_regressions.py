"""Regression tests for unsound certificates found by independent checks (issue 12, item 4)."""

import numpy as np
import pytest
import torch

from stablernn import LipschitzRNN, SVDComboNet, certify
from stablernn.certification import assembly_family
from stablernn.contraction import certify_lipschitz, lipschitz_family
from stablernn.contraction.as_run import metric_root
from stablernn.contraction.conditions import theorem4
from stablernn.contraction.lipschitz import theorem1b
from stablernn.models.subnetworks import LipschitzPart


def expanding_almost_triangular(size=16):
    """Lower bidiagonal up to tiny upper entries (1e-7 of the largest): J = -I + W D has an
    eigenvalue near -1 + 2 sqrt(10) > 0 at D = I. 16 units: too many slope vertices for the
    exact check, so only the sound bound checks the metric."""
    weight = np.diag(np.full(size - 1, 1e4), -1) + np.diag(np.full(size - 1, 1e-3), 1)
    assert np.linalg.eigvals(-np.eye(size) + weight).real.max() > 0
    return weight


def test_theorem4_zero_tolerance_does_not_certify_an_expanding_system():
    weight = expanding_almost_triangular()
    result = theorem4(weight, zero_tol=1e-6)
    assert not result.contracting
    assert not certify(weight).contracting


def test_a_failed_check_is_never_replaced_by_a_derived_rate():
    weight = expanding_almost_triangular()
    result = theorem4(weight, zero_tol=1e-6)
    assert result.metric is None and result.rate is None


def test_theorem1b_asymmetry_is_paid_for_in_the_rate():
    # 16 units (the check is a sound bound, not exact); W symmetric up to a skew part within a
    # loose symmetry tolerance: the certified rate must not exceed the worst sampled one
    rng = np.random.default_rng(0)
    size = 16
    a = -2.0 * np.eye(size)
    noise = rng.normal(size=(size, size)) * 0.05
    w = -np.eye(size) + 0.5 * (noise + noise.T)
    skew = rng.normal(size=(size, size)) * 0.02
    w_asymmetric = w + (skew - skew.T)
    result = theorem1b(a, w_asymmetric, symmetry_tol=1.0)
    assert result.contracting
    family = lipschitz_family(a, w_asymmetric, 1.0, 1.0)
    root, inverse = metric_root(result.metric)
    worst = -np.inf
    for slopes in rng.integers(0, 2, (400, size)).astype(float):
        scaled = root @ family.jacobian(slopes) @ inverse
        worst = max(worst, np.linalg.eigvalsh(0.5 * (scaled + scaled.T)).max())
    assert result.rate <= -worst + 1e-9, (result.rate, -worst)


def test_feedback_defect_of_ill_conditioned_metrics_is_subtracted():
    torch.manual_seed(0)
    net = SVDComboNet(1, 3, 4, feedback_init_std=2.0, step_size=0.05)
    with torch.no_grad():
        for part in net.assembly.parts:
            part.log_scale.copy_(torch.linspace(-6, 6, 4))
    certificate = certify(net)
    assert certificate.contracting and certificate.details["feedback_defect_in_metric"] > 0
    family = assembly_family(net.assembly)
    root, inverse = metric_root(np.asarray(certificate.metric, dtype=np.float64))
    rng = np.random.default_rng(0)
    worst = -np.inf
    for _ in range(200):
        jacobian = family.jacobian(rng.integers(0, 2, family.slopes).astype(float))
        scaled = root @ jacobian @ inverse
        worst = max(worst, np.linalg.eigvalsh(0.5 * (scaled + scaled.T)).max())
    assert -worst >= certificate.rate - 1e-9, (-worst, certificate.rate)


def test_nan_parameters_give_a_failed_certificate_not_an_error():
    model = LipschitzRNN(1, 8, parametrization="contracting", method="exponential",
                         gamma_a=0.1, step_size=0.3)
    with torch.no_grad():
        model.cell.input_projection.weight[0, 0] = float("nan")
    certificate = certify(model)
    assert not certificate.contracting and not certificate.contracting_as_run
    assert "NaN or infinite" in certificate.reason


def test_certify_rejects_what_it_cannot_read():
    with pytest.raises(TypeError, match="certify accepts"):
        certify("hello")


def test_lipschitz_part_label_does_not_claim_theorem_1a():
    part = LipschitzPart(4)
    assert "Theorem 1 (a)" not in certify(part).condition


def test_no_constant_metric_is_said_when_a_jacobian_is_not_hurwitz():
    a = np.array([[0.5, 0.0], [0.0, -1.0]])  # eigenvalue +0.5 at every slope D = 0
    certificate = certify_lipschitz(a, np.zeros((2, 2)))
    assert not certificate.contracting and "no constant metric exists" in certificate.reason
