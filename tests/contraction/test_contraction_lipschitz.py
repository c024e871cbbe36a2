"""Paper 002: Theorem 1 (a), (b), Proposition 1, and certificates of Lipschitz RNNs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from contraction_helpers import worst_lmi
from hypothesis import given
from hypothesis import strategies as st

from stablernn.contraction import (
    certify_lipschitz,
    check_proposition1,
    lipschitz_family,
    proposition1_interval,
    theorem1a,
    theorem1b,
)

seeds = st.integers(0, 2**32 - 1)


def _lipschitz_jacobians(a, w, lip, rng, alpha=1.0):
    n = a.shape[0]
    if n <= 8:
        import itertools

        slopes = np.array(list(itertools.product((0.0, lip), repeat=n)))
    else:
        slopes = np.where(rng.random((64, n)) < 0.5, 0.0, lip)
    slopes = np.concatenate([slopes, rng.uniform(0, lip, (200, n))])
    return alpha * a[None] + slopes[:, :, None] * w[None]  # alpha A + D W


def _skew(rng, n, scale):
    s = rng.normal(size=(n, n)) * scale
    return s - s.T


@given(seeds, st.integers(1, 8), st.floats(0.2, 2.0), st.one_of(st.floats(0.05, 0.95), st.floats(1.05, 3.0)))
def test_theorem1a_holds_iff_hypothesis_and_identity_metric_works(seed, n, lip, target):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, n))
    a = -(e @ e.T) - 0.5 * np.eye(n) + _skew(rng, n, 2.0)
    sigma_min = -np.linalg.eigvalsh(0.5 * (a + a.T)).max()
    w = rng.normal(size=(n, n))
    w *= target * sigma_min / (lip * np.linalg.norm(w, 2))
    result = theorem1a(torch.tensor(a), torch.tensor(w), lipschitz=lip)
    assert result.holds == (target < 1)
    if result.holds:
        assert result.contracting
        np.testing.assert_array_equal(result.metric, np.eye(n))
        assert result.rate >= sigma_min * (1 - target) - 1e-9
        jacobians = _lipschitz_jacobians(a, w, lip, rng)
        assert worst_lmi(jacobians, np.eye(n), result.rate) <= 1e-9 * (1 + np.abs(jacobians).max())


def test_theorem1a_reads_alpha_and_rejects_bad_cases():
    a = -np.eye(2)
    w = 0.4 * np.eye(2)
    model = SimpleNamespace(A=torch.tensor(a), W=torch.tensor(w), alpha=0.5)
    result = theorem1a(model)  # alpha A = -0.5 I: sigma_min 0.5 > 0.4
    assert result.holds and result.rate == pytest.approx(0.5 - 0.4, abs=1e-9)  # worst slope 1
    model = SimpleNamespace(A=torch.tensor(a), W=torch.tensor(w), alpha=0.3)
    assert not theorem1a(model).holds  # 0.3 < 0.4
    assert not theorem1a(np.eye(2), w).holds  # A_sym not negative definite
    assert not theorem1a(-np.eye(2), np.zeros((2, 2))).holds  # W singular


@given(seeds, st.integers(1, 7), st.floats(0.1, 3.0))
def test_theorem1b_symmetric_w_certifies(seed, n, c):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, n))
    w = -(e @ e.T) - 0.1 * np.eye(n)
    a = c * w + _skew(rng, n, 0.01)
    hypothesis = (np.linalg.eigvalsh(a + a.T).max() < 0
                  and np.linalg.eigvalsh(a.T @ w + w.T @ a).min() > 0)
    result = theorem1b(a, w)
    assert result.holds == hypothesis
    if not hypothesis:
        return
    assert result.contracting
    metric = result.metric
    jacobians = _lipschitz_jacobians(a, w, 5.0, rng)  # any slopes >= 0
    assert worst_lmi(jacobians, metric, result.rate) <= 1e-8 * (1 + np.abs(jacobians).max())


def test_theorem1b_nonsymmetric_w_is_not_certified():
    rng = np.random.default_rng(0)
    for _ in range(200):
        e = rng.normal(size=(3, 3))
        w = -(e @ e.T) * 0.5 + _skew(rng, 3, 2.0)
        a = 1.5 * w + 0.3 * rng.normal(size=(3, 3))
        result = theorem1b(a, w)
        if result.holds:
            assert not result.contracting and "not symmetric" in result.reason
            return
    pytest.fail("no example meeting (b) generated")


def test_theorem1b_rejects():
    assert not theorem1b(-np.eye(2), np.eye(2)).holds


@given(seeds, st.integers(1, 8), st.floats(0.0, 1.0), st.floats(0.0, 3.0))
def test_proposition1_corrected_interval(seed, n, beta, gamma):
    rng = np.random.default_rng(seed)
    free = rng.normal(size=(n, n))
    s = (1 - beta) * (free + free.T) + beta * (free - free.T) - gamma * np.eye(n)
    check = check_proposition1(s, free, beta, gamma)
    assert check.holds


def test_proposition1_printed_interval_is_wrong_and_module_input():
    from stablernn.parametrizations import SymmetricSkew

    low, high = proposition1_interval(np.eye(3), 0.0, 0.5)
    assert low == high == pytest.approx(1.5)  # S = (2 - gamma) I; printed: 1 - gamma = 0.5
    module = SymmetricSkew(6, beta=0.75, gamma=0.1)
    with torch.no_grad():
        module.free.normal_()
    assert check_proposition1(module().detach(), module).holds


def test_certify_lipschitz_cell_and_layer():
    from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN

    torch.manual_seed(0)
    cell = LipschitzCell(3, 16, gamma_a=1.0, gamma_w=0.5, step_size=0.1, parametrization="paper")
    certificate = certify_lipschitz(cell)
    assert certificate.contracting and certificate.rate > 0
    assert certificate.details["discrete_contracting"] and certificate.max_euler_step > 0.1
    layer = LipschitzRNN(3, 16, gamma_a=1.0, gamma_w=0.5, step_size=0.1, method="rk2", alpha=0.8,
                         parametrization="paper")
    certificate = certify_lipschitz(layer)
    assert certificate.contracting and "max_rk2_step" in certificate.details
    a, w = layer.A.detach().double().numpy(), layer.W.detach().double().numpy()
    rng = np.random.default_rng(0)
    jacobians = _lipschitz_jacobians(a, w, 1.0, rng, alpha=0.8)
    assert worst_lmi(jacobians, certificate.metric, certificate.rate) <= 1e-8


def test_certify_lipschitz_expanding():
    certificate = certify_lipschitz(np.eye(3), np.eye(3))
    assert not certificate.contracting and certificate.metric is None


def test_lipschitz_family_shapes():
    family = lipschitz_family(-np.eye(2), np.ones((2, 2)), 2.0, 0.5, monotone=False)
    assert family.low == -2.0 and family.high == 2.0
    np.testing.assert_allclose(family.jacobian(np.array([1.0, 0.0])), [[0.5, 1.0], [0.0, -0.5]])
