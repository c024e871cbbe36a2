"""Networks of networks (paper 000): parts, feedback (eq. 3), recursion, named combo nets."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stablernn import certify
from stablernn.models.assembly import Assembly, HierarchicalConnection
from stablernn.models.feedback import NegativeFeedback, block_mask
from stablernn.models.network import NetworkOfNetworks, SparseComboNet, SVDComboNet
from stablernn.models.subnetworks import SparseSubnetwork, SVDSubnetwork


def random_spd_blocks(sizes, generator):
    blocks = []
    for size in sizes:
        factor = torch.randn(size, size, generator=generator, dtype=torch.float64)
        blocks.append(factor @ factor.T + 0.5 * torch.eye(size, dtype=torch.float64))
    return torch.block_diag(*blocks)


@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       mask=st.sampled_from(["lower", "off-diagonal", "full"]), damping=st.booleans(),
       density=st.sampled_from([1.0, 0.5, 0.1]))
def test_feedback_is_skew_in_the_metric(seed, sizes, mask, damping, density):
    """Paper 000 eq. 3 / Corollary 2: M L + L^T M = -(C + C^T) for any B, C (sparse B too)."""
    generator = torch.Generator().manual_seed(seed)
    feedback = NegativeFeedback(sizes, mask=mask, damping=damping, density=density,
                                seed=seed).double()
    with torch.no_grad():
        feedback.coupling.copy_(torch.randn(feedback.coupling.shape, generator=generator))
        if damping:
            feedback.damping_factor.copy_(torch.randn(feedback.damping_factor.shape,
                                                      generator=generator))
    metric = random_spd_blocks(sizes, generator)
    L = feedback(metric, torch.linalg.inv(metric))
    symmetric = metric @ L + L.T @ metric
    expected = torch.zeros_like(symmetric)
    if damping:
        C = feedback.damping_factor @ feedback.damping_factor.T
        expected = -(C + C.T)
    torch.testing.assert_close(symmetric, expected, rtol=1e-9, atol=1e-8 * (1 + L.abs().max().item()))


def test_unconstrained_feedback_is_just_b():
    feedback = NegativeFeedback([2, 3], mask="off-diagonal", unconstrained=True)
    with torch.no_grad():
        feedback.coupling.normal_()
    metric = torch.eye(5)
    torch.testing.assert_close(feedback(metric, metric), feedback.coupling * feedback.mask)


def test_lower_block_mask_keeps_only_lower_off_diagonal_blocks():
    mask = block_mask([1, 2, 1], "lower")
    expected = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]],
                            dtype=torch.float32)
    torch.testing.assert_close(mask, expected)


def test_sparse_feedback_trains_a_fixed_seeded_fraction_of_b():
    sizes = [32] * 8
    dense = block_mask(sizes, "lower")
    sparse = NegativeFeedback(sizes, density=0.1, seed=3)
    assert torch.equal(sparse.mask, NegativeFeedback(sizes, density=0.1, seed=3).mask)
    assert not torch.equal(sparse.mask, NegativeFeedback(sizes, density=0.1, seed=4).mask)
    assert bool((sparse.mask <= dense).all())  # never outside the block mask
    fraction = float(sparse.mask.sum() / dense.sum())
    assert abs(fraction - 0.1) < 0.01, fraction  # 7,168 lower entries: std of the mean 0.0035
    with torch.no_grad():
        sparse.coupling.normal_()
    metric = torch.eye(sum(sizes))
    (sparse(metric, metric) * torch.randn(metric.shape)).sum().backward()
    trained = sparse.coupling.grad != 0
    assert torch.equal(trained, sparse.mask.bool())


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_sparse_feedback_rejects_bad_density(density):
    with pytest.raises(ValueError, match=r"feedback_density must be a number in \(0, 1\]"):
        NegativeFeedback([2, 2], density=density)


def test_sparse_feedback_network_is_certified_as_it_runs():
    net = SparseComboNet(3, num_subnetworks=4, subnetwork_size=8, density=0.2, seed=1,
                         method="splitting", feedback_density=0.3, feedback_init_std=1.0)
    certificate = certify(net)
    assert certificate.contracting, certificate.reason
    assert 0 < float(net.assembly.feedback.mask.sum()) < float(
        block_mask([8] * 4, "lower").sum())


def test_sparse_subnetwork_meets_theorem_1_with_its_metric():
    part = SparseSubnetwork(32, density=0.05, magnitude=1.0, seed=3)
    W = part.weight().double().numpy()
    assert np.all(np.diag(W) == 0)
    assert abs((W != 0).mean() - 0.05) < 0.03
    assert np.abs(W).max() <= 1.0
    P = part.metric().double().numpy()
    comparison = np.abs(W) - np.eye(32)
    assert np.all(np.diag(P) > 0) and np.allclose(P, np.diag(np.diag(P)))
    assert np.linalg.eigvalsh(P @ comparison + comparison.T @ P).max() < 0
    assert not any(p.requires_grad for p in part.parameters())
    assert {name for name, _ in part.named_buffers()} == {"weight_matrix", "metric_matrix"}
    again = SparseSubnetwork(32, density=0.05, magnitude=1.0, seed=3)
    assert torch.equal(again.weight(), part.weight())


def test_sparse_subnetwork_bad_settings():
    with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\], got 0.0"):
        SparseSubnetwork(8, density=0.0)
    with pytest.raises(ValueError, match="density must be a number in"):
        SparseSubnetwork(8, density=1.5)
    with pytest.raises(ValueError, match="magnitude must be a finite number > 0"):
        SparseSubnetwork(8, magnitude=0.0)
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        SparseSubnetwork(0)
    with pytest.raises(ValueError, match="no sparse subnetwork .* lower density or magnitude"):
        SparseSubnetwork(32, density=0.9, magnitude=5.0, max_tries=5)


@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 3.0))
def test_svd_subnetwork_meets_theorem_5_for_any_parameters(seed, scale):
    """g^2 W^T P W - P < 0 with P = Theta^2, whatever the free parameters are (checked after the
    congruence by Theta^{-1}, which keeps the sign and the rounding in scale)."""
    torch.manual_seed(seed)
    part = SVDSubnetwork(6, margin=0.05).double()
    with torch.no_grad():
        for parameter in part.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    W, P = part.weight().detach().numpy(), part.metric().detach().numpy()
    g = part.slope_bound
    inverse_theta = 1.0 / np.sqrt(np.diag(P))
    condition = g**2 * W.T @ P @ W - P
    scaled = inverse_theta[:, None] * condition * inverse_theta[None, :]
    assert np.linalg.eigvalsh(scaled).max() < -(1 - 0.95**2) + 1e-6
    theta = np.sqrt(np.diag(P))
    singular = np.linalg.svd(theta[:, None] * W / theta[None, :], compute_uv=False)
    assert singular.max() <= (1 - 0.05) / g + 1e-9


def dense_reference(cell, inputs, h0):
    """Paper 000 eq. 5 with one dense block-diagonal W, Euler, written out."""
    assembly = cell.assembly
    W = torch.block_diag(*[leaf.weight() for leaf in assembly.leaves()]).detach()
    L = assembly.feedback_matrix().detach()
    U, b = cell.input_projection.weight.detach(), cell.input_projection.bias.detach()
    phi = assembly.leaves()[0].phi
    x, states = h0, []
    for s in inputs:
        u = s @ U.T + b
        x = x + cell.step_size * (-x + phi(x) @ W.T + x @ L.T + u)
        states.append(x)
    return torch.stack(states)


def test_batched_block_step_equals_dense_step():
    torch.manual_seed(0)
    net = SparseComboNet(2, num_subnetworks=4, subnetwork_size=6, density=0.3, magnitude=1.0,
                         step_size=0.2, seed=1).double()
    with torch.no_grad():
        net.assembly.feedback.coupling.normal_(0, 0.3)
    inputs = torch.randn(12, 3, 2, dtype=torch.float64)
    h0 = torch.randn(3, 24, dtype=torch.float64)
    output, _ = net(inputs, h0.unsqueeze(0))
    torch.testing.assert_close(output, dense_reference(net.cell, inputs, h0), rtol=1e-12, atol=1e-12)


def mixed_nested_network():
    torch.manual_seed(0)
    inner = Assembly([SparseSubnetwork(4, 0.3, 1.0, seed=5), SVDSubnetwork(3)], weights=[1.0, 2.0])
    outer = Assembly([inner, SVDSubnetwork(5), SparseSubnetwork(4, 0.3, 1.0, seed=6)],
                     mask="off-diagonal", damping=True)
    return NetworkOfNetworks(2, outer, step_size=0.1)


def test_nested_assembly_is_one_flat_system():
    net = mixed_nested_network().double()
    assembly = net.assembly
    assert assembly.size == 16 and [leaf.size for leaf in assembly.leaves()] == [4, 3, 5, 4]
    with torch.no_grad():
        for name, parameter in assembly.named_parameters():
            if "coupling" in name or "damping" in name:
                parameter.normal_()
    M, L = assembly.metric(), assembly.feedback_matrix()
    C = assembly.feedback.damping_factor @ assembly.feedback.damping_factor.T
    torch.testing.assert_close(M @ L + L.T @ M, -(C + C.T), rtol=1e-9, atol=1e-8)
    inner_L = assembly.parts[0].feedback_matrix()
    torch.testing.assert_close(L[:7, :7] - inner_L, assembly.feedback(M, assembly.metric_inverse())[:7, :7])
    output, h_n = net(torch.randn(5, 2, 2, dtype=torch.float64))
    assert output.shape == (5, 2, 16) and torch.isfinite(output).all()


def test_gradients_reach_feedback_and_trained_parts_never_fixed_weights():
    net = mixed_nested_network()
    with torch.no_grad():
        net.assembly.feedback.coupling.normal_(0, 0.1)
    output, _ = net(torch.randn(6, 3, 2))
    output[-1].pow(2).sum().backward()
    assembly = net.assembly
    assert assembly.feedback.coupling.grad.abs().sum() > 0
    assert assembly.feedback.damping_factor.grad is not None
    svd = assembly.parts[1]
    assert svd.singular_logits.grad.abs().sum() > 0 and svd.log_scale.grad.abs().sum() > 0
    sparse = assembly.parts[2]
    assert list(sparse.parameters()) == [] and not sparse.weight_matrix.requires_grad
    # B is only trained where the mask allows
    masked = assembly.feedback.coupling.grad * (1 - assembly.feedback.mask)
    assert masked.abs().sum() == 0


def test_assembly_bad_input():
    with pytest.raises(ValueError, match="parts must hold at least one part"):
        Assembly([])
    with pytest.raises(ValueError, match=r"part 1 \(Linear\) has no size, slope_bound, condition, metric, "
                       "jacobian_family, prepare, vector_field"):
        Assembly([SVDSubnetwork(3), torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="weights must have one entry per part"):
        Assembly([SVDSubnetwork(3)], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="mask must be one of"):
        Assembly([SVDSubnetwork(3), SVDSubnetwork(3)], mask="upper")
    with pytest.raises(ValueError, match="must feed a later part"):
        HierarchicalConnection(1, 0, 3, 3)
    with pytest.raises(ValueError, match=r"connection 0->1 has shape \(3, 3\), expected \(4, 3\)"):
        Assembly([SVDSubnetwork(3), SVDSubnetwork(4)], connections=[HierarchicalConnection(0, 1, 3, 3)])


def test_hierarchical_connection_jacobian_is_bounded():
    connection = HierarchicalConnection(0, 1, 5, 4, gain=0.3)
    with torch.no_grad():
        connection.linear.weight.mul_(50)
    prepared = connection.prepare()
    x = torch.randn(5, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(lambda v: connection(v.unsqueeze(0), prepared)[0], x)
    assert torch.linalg.matrix_norm(jacobian, ord=2) <= 0.3 + 1e-6


@pytest.mark.parametrize("method", ["euler", "rk2"])
def test_combo_nets_follow_rnn_conventions(method):
    for net in (SparseComboNet(3, 4, 8, density=0.2, seed=0, method=method, batch_first=True),
                SVDComboNet(3, 4, 8, method=method, batch_first=True)):
        output, h_n = net(torch.randn(2, 7, 3))
        assert output.shape == (2, 7, 32) and h_n.shape == (1, 2, 32)
        first, h_mid = net(torch.randn(2, 7, 3)[:, :3])
        assert h_mid.shape == (1, 2, 32)
