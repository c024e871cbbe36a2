"""Certificates of networks of networks (paper 000, Corollaries 1-2; appendix A.2.1)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablernn import certify
from stablernn.contraction import empirical_rate
from stablernn.models import Assembly, HierarchicalConnection, NetworkOfNetworks
from stablernn.models.network import SparseComboNet, SVDComboNet
from stablernn.models.subnetworks import (
    LipschitzPart,
    ProductSubnetwork,
    SparseSubnetwork,
    SVDSubnetwork,
    SymmetricSubnetwork,
    TriangularSubnetwork,
)


def nested_network(step_size=0.02, connections=False):
    torch.manual_seed(0)
    inner = Assembly([SparseSubnetwork(6, 0.2, 1.0, seed=5), SVDSubnetwork(4),
                      ProductSubnetwork(3)], weights=[1.0, 2.0, 0.5])
    outer_parts = [inner, SymmetricSubnetwork(4), TriangularSubnetwork(4), LipschitzPart(3)]
    links = [HierarchicalConnection(1, 2, 4, 4, gain=0.05)] if connections else []
    outer = Assembly(outer_parts, mask="off-diagonal", damping=True, connections=links)
    net = NetworkOfNetworks(2, outer, step_size=step_size).double()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if "coupling" in name or "damping" in name:
                parameter.normal_(0, 0.3)
    return net


@pytest.mark.parametrize("connections", [False, True])
def test_nested_mixed_assembly_certifies_and_contracts_at_least_as_promised(connections):
    net = nested_network(connections=connections)
    certificate = certify(net)
    assert certificate.contracting, certificate.reason
    # the outer assembly has damping (Corollary 2); hierarchy is named when present
    expected = "paper 000, Corollary 2" + (" with hierarchy (appendix A.2.1)" if connections else "")
    assert certificate.condition == expected
    metric = certificate.metric
    assert np.allclose(metric, metric.T) and np.linalg.eigvalsh(metric).min() > 0
    inputs = torch.randn(300, 3, 2, dtype=torch.float64)
    measured = empirical_rate(net, inputs, n_pairs=4, metric=metric)
    # Euler at a small step: the discrete decay per unit time approaches the continuous one
    assert measured.rate >= 0.9 * certificate.rate, (measured.rate, certificate.rate)


def test_unconstrained_control_does_not_certify():
    net = SparseComboNet(1, 3, 8, density=0.2, seed=0, unconstrained=True)
    certificate = certify(net)
    assert not certificate.contracting
    assert "unconstrained" in certificate.reason and certificate.metric is None


def test_broken_feedback_is_caught():
    net = SVDComboNet(1, 3, 4)
    with torch.no_grad():
        net.assembly.feedback.coupling.normal_()
    feedback = net.assembly.feedback
    original = feedback.forward
    feedback.forward = lambda metric, inverse: feedback.coupling * feedback.mask  # wrong L
    certificate = certify(net)
    assert not certificate.contracting and "not negative in the metric" in certificate.reason
    feedback.forward = original
    assert certify(net).contracting


def test_part_that_cannot_be_certified_is_refused_unless_allowed():
    part = LipschitzPart(4, gamma_a=0.0)
    with torch.no_grad():
        part.param_a.free.copy_(torch.eye(4))  # A = 2(1 - beta) I: expanding
    with pytest.raises(ValueError, match=r"part 1 \(LipschitzPart\) is not contracting: .*require_contracting=False"):
        Assembly([SVDSubnetwork(3), part])
    assembly = Assembly([SVDSubnetwork(3), part], require_contracting=False)
    certificate = certify(assembly)
    assert not certificate.contracting and "part 1 (LipschitzPart)" in certificate.reason


def test_every_part_metric_satisfies_its_theorem():
    torch.manual_seed(0)
    for part in (SparseSubnetwork(8, 0.2, 1.0, seed=1), SVDSubnetwork(5), ProductSubnetwork(5),
                 SymmetricSubnetwork(5), TriangularSubnetwork(5)):
        certificate = certify(part)
        assert certificate.contracting, (type(part).__name__, certificate.reason)
        assert certificate.condition == part.condition
        W = part.weight().detach().double().numpy()
        M = certificate.metric
        for d in np.random.default_rng(0).integers(0, 2, size=(64, W.shape[0])):
            J = -np.eye(W.shape[0]) + W @ np.diag(d * part.slope_bound)
            worst = np.linalg.eigvalsh(M @ J + J.T @ M + 2 * certificate.rate * M).max()
            assert worst <= 1e-6 * np.abs(M).max()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000))
def test_certificate_survives_many_random_optimizer_steps(seed):
    torch.manual_seed(seed)
    net = SVDComboNet(2, 3, 5)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        for parameter in net.parameters():
            parameter.grad = torch.randn_like(parameter)
        optimizer.step()
    certificate = certify(net)
    assert certificate.contracting, certificate.reason
    assert certificate.rate >= 0.05 - 1e-6  # the SVD parts' margin


def test_euler_step_bound_is_a_real_contraction_of_the_discrete_map():
    net = nested_network()
    certificate = certify(net)
    step = 0.9 * certificate.max_euler_step
    net.cell.step_size = step
    measured = empirical_rate(net, torch.randn(50, 2, 2, dtype=torch.float64), n_pairs=4,
                              metric=certificate.metric)
    assert measured.worst_rate > 0
