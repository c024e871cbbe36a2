"""The promise itself: each family's certified default contracts as it runs.

For every default (the contracting Lipschitz RNN with the exponential step, the Sparse and SVD
Combo Nets with the splitting step), at initialisation and after large random optimizer steps:
``contracting_as_run`` holds, every one-step Jacobian of the model's own forward (autograd,
float64) has ``||J||_M <= step_factor``, and two float32 trajectories under the same input
approach each other in M by at least ``step_factor`` per step.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stablernn import LipschitzRNN, SparseComboNet, SVDComboNet, certify
from stablernn.contraction.as_run import metric_root, sampled_step_factor


def lipschitz(seed=0, step_size=0.3, gamma_a=0.1, share=0.9):
    torch.manual_seed(seed)
    return LipschitzRNN(2, 12, parametrization="contracting", method="exponential",
                        step_size=step_size, gamma_a=gamma_a, nonlinear_share=share)


def sparse(seed=0, step_size=0.3):
    torch.manual_seed(seed)
    return SparseComboNet(2, 4, 8, density=0.25, seed=seed, step_size=step_size,
                          method="splitting", feedback_init_std=0.5)


def svd(seed=0, step_size=0.3):
    torch.manual_seed(seed)
    return SVDComboNet(2, 4, 8, step_size=step_size, method="splitting", feedback_init_std=0.5)


FAMILIES = {"lipschitz": lipschitz, "sparse-combo": sparse, "svd-combo": svd}


def scramble(model, steps=50, lr=0.5, seed=0):
    """Large random optimizer steps: the parametrization must keep the guarantee."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        inputs = torch.randn(6, 3, 2, generator=generator)
        output, _ = model(inputs)
        target = torch.randn(output.shape, generator=generator)
        loss = (output * target).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def step_jacobians(model, count=24, scale=3.0, seed=1):
    """One-step Jacobians d h_{t+1} / d h_t of the model's own forward, float64, at random
    states and inputs."""
    model = model.double()
    generator = torch.Generator().manual_seed(seed)
    size = model.cell.hidden_size
    jacobians = []
    for _ in range(count):
        state = torch.randn(size, generator=generator, dtype=torch.float64) * scale
        inputs = torch.randn(1, 2, generator=generator, dtype=torch.float64) * scale

        def one_step(h):
            return model(inputs, h.view(1, size))[1].view(size)

        jacobians.append(torch.autograd.functional.jacobian(one_step, state).numpy())
    model.float()
    return np.stack(jacobians)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("trained", [False, True])
def test_default_contracts_as_it_runs(name, trained):
    model = FAMILIES[name]()
    if trained:
        scramble(model)
    certificate = certify(model)
    assert certificate.contracting_as_run, certificate.describe()
    assert certificate.step_factor < 1 and certificate.step_size == model.step_size
    assert certificate.method == model.method
    worst = sampled_step_factor(step_jacobians(model), certificate.metric)
    assert worst <= certificate.step_factor, (worst, certificate.step_factor)
    data = certificate.to_dict()
    assert data["contracting_as_run"] is True and data["step_factor"] == certificate.step_factor


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_trajectories_approach_by_the_step_factor_in_float32(name):
    model = scramble(FAMILIES[name](seed=3), steps=20, seed=3)
    certificate = certify(model)
    root, _ = metric_root(np.asarray(certificate.metric, dtype=np.float64))
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(40, 1, 2, generator=generator) * 2
    size = model.cell.hidden_size
    first = torch.randn(1, 1, size, generator=generator) * 2
    second = first + torch.randn(1, 1, size, generator=generator)
    with torch.no_grad():
        states_a, _ = model(inputs, first)
        states_b, _ = model(inputs, second)
    gaps = (states_a - states_b).squeeze(1).double().numpy()
    gaps = np.vstack([(first - second).view(1, size).double().numpy(), gaps])
    distances = np.linalg.norm(gaps @ root, axis=1)
    ratios = distances[1:] / distances[:-1]
    assert ratios.max() <= certificate.step_factor, (ratios.max(), certificate.step_factor)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 30.0),
       step_size=st.floats(0.05, 1.0), gamma_a=st.floats(0.01, 2.0),
       share=st.floats(0.05, 0.95))
@pytest.mark.slow
def test_contracting_lipschitz_for_any_parameter_value(seed, scale, step_size, gamma_a, share):
    """Every parameter value the parametrization allows, including huge ones."""
    model = lipschitz(seed, step_size, gamma_a, share)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, scale)
    certificate = certify(model)
    assert certificate.contracting_as_run, certificate.describe()
    assert certificate.step_factor <= model.cell.guaranteed_step_factor + 1e-4
    worst = sampled_step_factor(step_jacobians(model, count=8, seed=seed), certificate.metric)
    assert worst <= certificate.step_factor


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0), step_size=st.floats(0.05, 1.0))
def test_splitting_networks_for_any_feedback(seed, scale, step_size):
    """Any feedback B (and any trained SVD part): the flow is an isometry of the metric."""
    for build in (sparse, svd):
        model = build(seed, step_size)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "input_projection" not in name:
                    parameter.normal_(0.0, scale)
        certificate = certify(model)
        assert certificate.contracting_as_run, certificate.describe()
        worst = sampled_step_factor(step_jacobians(model, count=6, seed=seed), certificate.metric)
        assert worst <= certificate.step_factor


def test_paper_settings_are_honestly_not_certified_as_run():
    torch.manual_seed(0)
    paper = LipschitzRNN(1, 32, step_size=0.3, parametrization="paper")
    certificate = certify(paper)
    assert not certificate.contracting_as_run and certificate.step_factor >= 1
    assert "Not certified as it runs (step 0.3, euler)" in certificate.describe()
    euler_network = SparseComboNet(1, 4, 8, density=0.25, seed=0, step_size=0.3,
                                   feedback_init_std=1.0)
    certificate = certify(euler_network)
    assert certificate.contracting and not certificate.contracting_as_run
    assert "above the certified euler step" in certificate.describe()


def test_euler_expands_where_the_splitting_step_does_not():
    """The motivating fact: forward Euler of skew feedback expands in the metric."""
    torch.manual_seed(0)
    euler = SVDComboNet(2, 4, 8, step_size=0.3, feedback_init_std=3.0)
    splitting = SVDComboNet(2, 4, 8, step_size=0.3, method="splitting")
    splitting.load_state_dict(euler.state_dict())
    metric = certify(splitting).metric
    assert sampled_step_factor(step_jacobians(euler, count=4), metric) > 1
    assert sampled_step_factor(step_jacobians(splitting, count=4), metric) < 1


def test_rk2_network_reports_an_rk2_factor():
    net = SVDComboNet(1, 3, 4, step_size=0.05, method="rk2")
    certificate = certify(net)
    assert certificate.method == "rk2" and "RK2" in certificate.details["step_factor_method"]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), gamma_a=st.floats(0.0, 3.0), step_size=st.floats(0.01, 1.0),
       scale=st.floats(0.01, 2.0), method=st.sampled_from(["euler", "exponential", "rk2"]))
def test_paper_parametrization_claims_only_what_holds(seed, gamma_a, step_size, scale, method):
    """Whatever the paper's model claims as run (in whichever metric) holds for its Jacobians."""
    torch.manual_seed(seed)
    model = LipschitzRNN(2, 8, gamma_a=gamma_a, step_size=step_size, method=method,
                         parametrization="paper")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale * 10)
    certificate = certify(model)
    if certificate.contracting_as_run:
        worst = sampled_step_factor(step_jacobians(model, count=8, seed=seed), certificate.metric)
        assert worst <= certificate.step_factor
    else:
        assert certificate.step_factor is None or certificate.step_factor >= 1
        assert certificate.details["as_run_reason"]
