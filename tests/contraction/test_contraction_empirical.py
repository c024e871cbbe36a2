"""Empirical decay of certified models is at least the certified rate; expanding models diverge."""

import numpy as np
import pytest
import torch
from torch import nn

from stablernn.contraction import (
    certify_matrix,
    empirical_rate,
    euler_contraction_factor,
    rnn_family,
)


class EulerRateRNN(nn.Module):
    """Euler steps of paper 000, eq. 1 with ReLU: x+ = x + h (-x + W relu(x) + U u)."""

    def __init__(self, weight, input_size=2, step_size=0.05):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float64))
        self.hidden_size = self.weight.shape[0]
        self.input_weight = torch.randn(self.hidden_size, input_size, dtype=torch.float64)
        self.step_size = step_size

    def forward(self, inputs, h0):
        x = h0[0]
        outputs = []
        for u in inputs.unbind(0):
            x = x + self.step_size * (-x + torch.relu(x) @ self.weight.T + u @ self.input_weight.T)
            outputs.append(x)
        output = torch.stack(outputs)
        return output, output[-1:]


def _sparse_weight(seed, n=6, radius=0.8):
    rng = np.random.default_rng(seed)
    w = rng.uniform(-1, 1, (n, n)) * (rng.random((n, n)) < 0.5)
    np.fill_diagonal(w, 0.0)
    return w * radius / max(np.abs(np.linalg.eigvals(np.abs(w))).max(), 1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empirical_decay_at_least_certified(seed):
    torch.manual_seed(seed)
    w = _sparse_weight(seed)
    certificate = certify_matrix(w)
    assert certificate.contracting
    model = EulerRateRNN(w, step_size=0.05)
    inputs = torch.randn(200, 3, 2, dtype=torch.float64)
    measured = empirical_rate(model, inputs, n_pairs=4, metric=certificate.metric, seed=seed)
    # discrete guarantee: every pair, every step: d_k <= rho^k d_0 (no fitting error)
    factor = euler_contraction_factor(rnn_family(w, 1.0), certificate.metric, model.step_size)
    assert factor.holds
    discrete_rate = -np.log(factor.factor) / model.step_size
    assert measured.worst_rate >= discrete_rate - 1e-9
    # fitted rate vs the continuous-time certificate (the step is small)
    assert measured.rate >= 0.95 * certificate.rate
    assert measured.rates.shape == (12,) and measured.distances.shape == (201, 12)
    np.testing.assert_allclose(measured.times[:3], [0.0, 0.05, 0.1])


def test_expanding_model_is_not_certified_and_does_not_contract():
    w = 3 * np.eye(4)
    certificate = certify_matrix(w)
    assert not certificate.contracting and "no constant metric exists" in certificate.reason
    model = EulerRateRNN(w, step_size=0.05)
    inputs = torch.rand(100, 2, 2, dtype=torch.float64)  # nonnegative drive keeps units active
    measured = empirical_rate(model, inputs, n_pairs=4, scale=1.0)
    # every pair separates, like e^{2t} for units that stay active (Euler: log(1.1) / 0.05 = 1.9)
    assert measured.rate < 0 and np.all(measured.rates < -1.5)


def test_empirical_rate_with_lipschitz_rnn():
    from stablernn.contraction import certify_lipschitz
    from stablernn.models.lipschitz import LipschitzRNN

    torch.manual_seed(0)
    model = LipschitzRNN(2, 8, gamma_a=1.0, gamma_w=0.5, step_size=0.05,
                         parametrization="paper").double()
    certificate = certify_lipschitz(model)
    assert certificate.contracting
    measured = empirical_rate(model, torch.randn(200, 2, 2, dtype=torch.float64), n_pairs=4,
                              metric=certificate.metric)
    discrete_rate = -np.log(certificate.details["discrete_factor"]) / 0.05
    assert measured.worst_rate >= discrete_rate - 1e-9
    assert measured.rate >= 0.95 * certificate.rate


def test_empirical_rate_bad_input():
    model = EulerRateRNN(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(T, B, F\)"):
        empirical_rate(model, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="n_pairs"):
        empirical_rate(model, torch.zeros(5, 1, 2, dtype=torch.float64), n_pairs=0)
    with pytest.raises(ValueError, match="metric"):
        empirical_rate(model, torch.zeros(5, 1, 2, dtype=torch.float64), metric=-np.eye(2))
