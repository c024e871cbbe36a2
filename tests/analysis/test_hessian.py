"""The Hessian tools against exact Hessians: autograd's on tiny models, Q on quadratics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from stablernn import ODERNN, AntisymmetricRNN, LipschitzRNN, SequenceClassifier
from stablernn.analysis import (
    hessian_spectrum,
    hessian_vector_product,
    loss_closure,
    recurrent_parameters,
)
from stablernn.engine import use_backend


def tiny_problem(layer):
    """A float64 classifier on 6 sequences (T = 5, 2 features), its loss and the exact Hessian
    over the recurrent unit's parameters."""
    torch.manual_seed(1)
    model = SequenceClassifier(layer, 3).double()
    inputs = torch.randn(6, 5, 2, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    names, params = zip(*recurrent_parameters(model))

    def loss_of_flat(flat):
        pieces = flat.split([p.numel() for p in params])
        values = {n: x.reshape(p.shape) for n, x, p in zip(names, pieces, params)}
        return F.cross_entropy(torch.func.functional_call(model, values, (inputs,)), targets)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    exact = torch.autograd.functional.hessian(loss_of_flat, flat)
    return model, list(params), loss_closure(model, inputs, targets), exact


LAYERS = {
    "ode-rnn": lambda: ODERNN(2, 4, step_size=0.5, batch_first=True),
    "lipschitz": lambda: LipschitzRNN(2, 4, step_size=0.5, init_std=4.0, batch_first=True,
                                      engine="loop", parametrization="paper"),
}


@pytest.mark.parametrize("name", LAYERS)
def test_hessian_vector_product_is_exact(name):
    _, params, closure, exact = tiny_problem(LAYERS[name]())
    v = torch.randn(exact.shape[0], dtype=torch.float64)
    pieces = [x.reshape(p.shape) for x, p in zip(v.split([p.numel() for p in params]), params)]
    product = torch.cat([h.reshape(-1) for h in hessian_vector_product(closure, params, pieces)])
    torch.testing.assert_close(product, exact @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LAYERS)
def test_spectrum_matches_exact_hessian(name):
    _, params, closure, exact = tiny_problem(LAYERS[name]())
    eigenvalues = torch.linalg.eigvalsh(exact).flip(0).numpy()
    spectrum = hessian_spectrum(closure, params, top_k=3, trace_samples=400)
    np.testing.assert_allclose(spectrum.top_eigenvalues, eigenvalues[:3], rtol=1e-6)
    scale = abs(eigenvalues).max()
    assert abs(spectrum.min_eigenvalue - eigenvalues[-1]) <= 1e-6 * scale
    # Hutchinson with Rademacher vectors: variance 2 sum_{i != j} H_ij^2 per sample.
    trace = float(exact.trace())
    exact_std_error = float(2 * (exact.square().sum() - exact.diag().square().sum()) / 400) ** 0.5
    assert abs(spectrum.trace - trace) <= 3 * spectrum.trace_std_error
    assert spectrum.trace_std_error == pytest.approx(exact_std_error, rel=0.25)
    assert spectrum.num_parameters == exact.shape[0] and spectrum.samples == 400
    if eigenvalues[-1] > 1e-10 * scale:
        kappa = eigenvalues[0] / eigenvalues[-1]
        assert spectrum.condition_number == pytest.approx(kappa, rel=1e-5)
    else:
        assert spectrum.condition_number is None
    assert spectrum.to_dict()["top_eigenvalues"] == spectrum.top_eigenvalues


def test_spectrum_is_deterministic_for_a_seed():
    _, params, closure, _ = tiny_problem(LAYERS["ode-rnn"]())
    first = hessian_spectrum(closure, params, trace_samples=20, seed=3)
    assert hessian_spectrum(closure, params, trace_samples=20, seed=3) == first
    assert hessian_spectrum(closure, params, trace_samples=20, seed=4).trace != first.trace


def test_antisymmetric_hessian_is_singular_and_has_no_condition_number():
    # W = M - M^T: the loss ignores the symmetric part of M, a null space of H.
    layer = AntisymmetricRNN(2, 4, step_size=0.5, batch_first=True)
    _, params, closure, exact = tiny_problem(layer)
    spectrum = hessian_spectrum(closure, params, trace_samples=10)
    assert torch.linalg.eigvalsh(exact)[0] <= 1e-12
    assert spectrum.condition_number is None


def test_loss_closure_runs_the_loop_and_restores_the_model():
    torch.manual_seed(0)
    engine_model = SequenceClassifier(LipschitzRNN(2, 4, batch_first=True), 3).double()
    loop_model = SequenceClassifier(LipschitzRNN(2, 4, batch_first=True, engine="loop"), 3).double()
    loop_model.load_state_dict(engine_model.state_dict())
    inputs, targets = torch.randn(4, 5, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    engine_model.train()
    vector = [torch.ones_like(p) for _, p in recurrent_parameters(engine_model)]
    products = [
        hessian_vector_product(loss_closure(m, inputs, targets),
                               [p for _, p in recurrent_parameters(m)], vector)
        for m in (engine_model, loop_model)
    ]
    for a, b in zip(*products):
        torch.testing.assert_close(a, b)
    assert engine_model.rnn.engine == "auto" and engine_model.training


def test_engine_loss_explains_why_it_cannot_be_differentiated_twice():
    model = SequenceClassifier(LipschitzRNN(2, 4, batch_first=True), 3).double()
    inputs, targets = torch.randn(4, 5, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    params = [p for _, p in recurrent_parameters(model)]
    with use_backend("python"), pytest.raises(RuntimeError, match="loss_closure"):
        hessian_vector_product(lambda: F.cross_entropy(model(inputs), targets), params,
                               [torch.ones_like(p) for p in params])


def test_recurrent_parameters_are_the_units_own():
    model = SequenceClassifier(LipschitzRNN(2, 4), 3)
    names = [name for name, _ in recurrent_parameters(model)]
    assert names == ["rnn.cell.param_a.free", "rnn.cell.param_w.inner.free",
                     "rnn.cell.input_projection.weight", "rnn.cell.input_projection.bias"]
    assert [n for n, _ in recurrent_parameters(model.rnn)] == [n[4:] for n in names]
    assert len(recurrent_parameters(torch.nn.GRU(2, 3))) == 4
    with pytest.raises(ValueError, match="model must be a recurrent layer"):
        recurrent_parameters(torch.nn.Linear(2, 3))


def quadratic(n, seed, definite):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    q = a @ a.T + 0.5 * np.eye(n) if definite else 0.5 * (a + a.T)
    x = torch.tensor(rng.standard_normal(n), requires_grad=True)
    q_t = torch.tensor(q)
    return q, x, lambda: 0.5 * x @ q_t @ x


@given(n=st.integers(2, 10), seed=st.integers(0, 2**32 - 1), definite=st.booleans(),
       top_k=st.integers(1, 3))
def test_quadratic_spectrum_is_q(n, seed, definite, top_k):
    q, x, loss_fn = quadratic(n, seed, definite)
    top_k = min(top_k, n - 1)
    eigenvalues = np.linalg.eigvalsh(q)[::-1]
    scale = abs(eigenvalues).max()
    spectrum = hessian_spectrum(loss_fn, [x], top_k=top_k, tol=0.0)
    np.testing.assert_allclose(spectrum.top_eigenvalues, eigenvalues[:top_k], rtol=0,
                               atol=1e-9 * scale)
    assert abs(spectrum.min_eigenvalue - eigenvalues[-1]) <= 1e-9 * scale
    assert abs(spectrum.trace - np.trace(q)) <= 6 * spectrum.trace_std_error + 1e-9 * scale
    if definite:
        kappa = eigenvalues[0] / eigenvalues[-1]
        assert spectrum.condition_number == pytest.approx(kappa, rel=1e-7)
    elif eigenvalues[-1] < 0:
        assert spectrum.condition_number is None
    v = torch.tensor(np.random.default_rng(seed + 1).standard_normal(n))
    (product,) = hessian_vector_product(loss_fn, [x], [v])
    np.testing.assert_allclose(product.numpy(), q @ v.numpy(), rtol=1e-12, atol=1e-12 * scale)


def test_diagonal_hessian_trace_is_exact():
    # v^T D v = tr(D) for every Rademacher v: zero variance.
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    d = torch.arange(1.0, 6.0, dtype=torch.float64)
    spectrum = hessian_spectrum(lambda: 0.5 * (d * x * x).sum(), [x], trace_samples=2)
    assert spectrum.trace == pytest.approx(15.0) and spectrum.trace_std_error == 0.0


def test_all_eigenvalues_use_the_dense_matrix():
    q, x, loss_fn = quadratic(3, 0, True)
    spectrum = hessian_spectrum(loss_fn, [x], top_k=3)
    np.testing.assert_allclose(spectrum.top_eigenvalues, np.linalg.eigvalsh(q)[::-1], rtol=1e-12)
    assert spectrum.method.startswith("dense")
    single = torch.ones(1, dtype=torch.float64, requires_grad=True)
    assert hessian_spectrum(lambda: 2 * single.pow(2).sum(), [single]).top_eigenvalues == [4.0]


def test_unused_and_linear_parameters_give_zero_products():
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    y = torch.ones(3, dtype=torch.float64, requires_grad=True)
    z = torch.ones(1, dtype=torch.float64, requires_grad=True)
    products = hessian_vector_product(lambda: (x * x).sum() + 3 * z.sum(), [x, y, z],
                                      [torch.ones(2), torch.ones(3), torch.ones(1)])
    assert [p.tolist() for p in products] == [[2.0, 2.0], [0.0, 0.0, 0.0], [0.0]]


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "top_k"), ({"top_k": 6}, "top_k"), ({"trace_samples": 1}, "trace_samples"),
    ({"tol": -1.0}, "tol"), ({"max_iter": 0}, "max_iter"),
])
def test_bad_spectrum_arguments(kwargs, match):
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        hessian_spectrum(lambda: (x**4).sum(), [x], **kwargs)


def test_bad_params_vector_and_loss():
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="params must be a non-empty"):
        hessian_spectrum(lambda: x.sum(), [])
    with pytest.raises(ValueError, match=r"params\[0\].*requires_grad"):
        hessian_vector_product(lambda: x.sum(), [torch.ones(2)], [torch.ones(2)])
    with pytest.raises(ValueError, match=r"vector\[0\] must have shape \(2,\)"):
        hessian_vector_product(lambda: (x**2).sum(), [x], [torch.ones(3)])
    with pytest.raises(ValueError, match="vector must have one tensor per parameter"):
        hessian_vector_product(lambda: (x**2).sum(), [x], [])
    with pytest.raises(ValueError, match="loss_fn"):
        hessian_vector_product(lambda: x**2, [x], [torch.ones(2)])
