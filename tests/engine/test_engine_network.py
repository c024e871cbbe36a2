"""The engine against the plain loop for networks of rate subnetworks (paper 000, eq. 5): Sparse
and SVD Combo Nets and assemblies of other parts, states and every gradient, both engine paths;
configurations the engine does not run fall back to the loop."""

import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stablernn.engine import (
    native,
    network_euler,
    network_rk2,
    network_splitting,
    run_cell,
    use_backend,
)
from stablernn.models.assembly import Assembly, HierarchicalConnection
from stablernn.models.network import NetworkOfNetworks, SparseComboNet, SVDComboNet
from stablernn.models.subnetworks import ProductSubnetwork, SVDSubnetwork, SymmetricSubnetwork

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
SLOW = pytest.mark.slow  # the rest of a matrix whose first entries run in the quick loop


def available(backend: str) -> str:
    """The backend to test: native falls back to python where it cannot build (the build itself
    is checked by test_engine_backends.py)."""
    return backend if backend == "python" or native.load() is not None else "python"


def relative_error(got: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """Largest deviation over the largest entry of ``expected`` (floored at ``floor``: a
    gradient that is zero in exact arithmetic is compared with the scale of the others)."""
    scale = max(expected.abs().max().item(), floor)
    return (got - expected).abs().max().item() / (scale if scale > 0 else 1.0)


def perturbed_pair(layer, dtype, seed, scale=0.3):
    """(engine layer, loop layer) with the same random parameters."""
    torch.manual_seed(seed)
    layer = layer.to(dtype)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    loop = copy.deepcopy(layer)
    loop.engine, layer.engine = "loop", "auto"
    return layer, loop


def run_and_grad(layer, inputs, h0, weights, last_only=False):
    """Output and gradients of a loss on every state and the last one, or (``last_only``) on
    the last state alone, as a classifier's loss is (the engine then builds no dense gradient)."""
    for parameter in layer.parameters():
        parameter.grad = None
    inputs = inputs.detach().requires_grad_(True)
    h0 = h0.detach().requires_grad_(True)
    output, last = layer(inputs, h0)
    if last_only:
        loss = (last * weights[-1]).sum() + last.pow(3).sum()
    else:
        loss = (output * weights).sum() + (output ** 2).sum() + last.pow(3).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}
    grads["input"], grads["h0"] = inputs.grad.clone(), h0.grad.clone()
    return output.detach(), grads


def assert_matches(engine, loop, steps, batch, dtype, seed=0, last_only=False):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps, batch, engine.input_size, generator=generator).to(dtype)
    h0 = 0.5 * torch.randn(1, batch, engine.hidden_size, generator=generator).to(dtype)
    weights = torch.randn(steps, batch, engine.hidden_size, generator=generator).to(dtype)
    out_e, grads_e = run_and_grad(engine, inputs, h0, weights, last_only)
    out_l, grads_l = run_and_grad(loop, inputs, h0, weights, last_only)
    tol = TOLERANCE[dtype]
    # states against the size of h0 at least: a near-cancelling step carries its terms' rounding
    assert relative_error(out_e, out_l, h0.abs().max().item()) < tol
    assert set(grads_e) == set(grads_l)
    floor = 1e-2 * max(g.abs().max().item() for g in grads_l.values())
    exact = None
    for name in grads_l:
        if relative_error(grads_e[name], grads_l[name], floor) < tol:
            continue
        if dtype != torch.float32:
            raise AssertionError(f"{name}: engine and loop differ")
        # float32: against the exact (float64) gradient, within twice the loop's own rounding
        # error or 2e-4 of the largest gradient entry: an SVD part's log-scale gradient is a
        # difference of row and column sums that cancel, and the engine sums them over the
        # whole sequence at once (seen: 1.0e-4 where the loop's error was 6.8e-6)
        if exact is None:
            wide = copy.deepcopy(loop).double()
            _, exact = run_and_grad(wide, inputs.double(), h0.double(), weights.double(),
                                    last_only)
        loop_error = relative_error(grads_l[name].double(), exact[name], floor)
        engine_error = relative_error(grads_e[name].double(), exact[name], floor)
        assert engine_error <= max(2e-4, 2 * loop_error), name
    return grads_l


@settings(max_examples=20, deadline=None)
@example(seed=3, steps=16, batch=3, count=1, size=1, step_size=0.2591122405635977,
         dtype=torch.float32, backend="native", activation="sigmoid")  # exact gradient 0
@example(seed=249, steps=25, batch=1, count=4, size=6, step_size=0.47750124857346427,
         dtype=torch.float32, backend="native", activation="tanh")  # cancellation
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 25), batch=st.integers(1, 4),
       count=st.integers(1, 4), size=st.integers(1, 6), step_size=st.floats(0.02, 0.5),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       backend=st.sampled_from(["native", "python"]),
       activation=st.sampled_from(["relu", "tanh", "sigmoid", "softplus"]))
@pytest.mark.slow
def test_svd_combo_net_matches_loop(seed, steps, batch, count, size, step_size, dtype, backend,
                                    activation):
    """Trained blocks (SVD parts), feedback L from B: gradients reach U, V, Sigma, Theta, B and
    the input layer exactly as on the loop."""
    torch.manual_seed(seed)
    layer = SVDComboNet(2, num_subnetworks=count, subnetwork_size=size, step_size=step_size,
                        activation=activation, feedback_init_std=0.3)
    engine, loop = perturbed_pair(layer, dtype, seed)
    with use_backend(available(backend)):
        grads = assert_matches(engine, loop, steps, batch, dtype, seed)
    assert any("singular_logits" in name for name in grads)
    if count > 1:
        assert "cell.assembly.feedback.coupling" in grads


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("backend", ["native", "python"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_combo_net_matches_loop(backend, dtype, last_only):
    """Fixed sparse parts (buffers: no block gradient), trained feedback and input layer; a loss
    on every state or on the last state only."""
    layer = SparseComboNet(3, num_subnetworks=4, subnetwork_size=8, density=0.2, seed=3,
                           feedback_init_std=0.2)
    engine, loop = perturbed_pair(layer, dtype, seed=1, scale=0.1)
    with use_backend(available(backend)):
        grads = assert_matches(engine, loop, steps=40, batch=5, dtype=dtype, last_only=last_only)
    assert set(grads) == {"cell.assembly.feedback.coupling", "cell.input_projection.weight",
                          "cell.input_projection.bias", "input", "h0"}


@pytest.mark.parametrize("backend", ["native", "python"])
def test_paper_size_sparse_combo_net_float32(backend):
    """16 x 32 at 3.3% density, T = 100: float32 gradients agree to 1e-5."""
    layer = SparseComboNet(1, seed=0, feedback_init_std=0.05)
    engine, loop = perturbed_pair(layer, torch.float32, seed=2, scale=0.01)
    with use_backend(available(backend)):
        assert_matches(engine, loop, steps=100, batch=6, dtype=torch.float32)


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("input_size", [2, 40])  # fused input layer, projected inputs
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("method", ["euler", pytest.param("splitting", marks=SLOW),
                                    pytest.param("rk2", marks=SLOW)])
def test_rows_split_across_threads_matches_loop(threads, input_size, last_only, method):
    """On 2 threads the native kernels run the batch as two blocks of rows, one per thread, for
    the whole sequence (B = 71: uneven blocks); on 1 thread as one block. Both agree with the
    loop: SVD parts (trained blocks) and Sparse Combo parts (fixed), float64 and float32."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype in (torch.float64, torch.float32):
            for layer in (SVDComboNet(input_size, num_subnetworks=3, subnetwork_size=5,
                                      method=method),
                          SparseComboNet(input_size, num_subnetworks=4, subnetwork_size=8,
                                         density=0.2, seed=3, feedback_init_std=0.2,
                                         method=method)):
                engine, loop = perturbed_pair(layer, dtype, seed=4, scale=0.1)
                with use_backend(available("native")):
                    assert_matches(engine, loop, steps=20, batch=71, dtype=dtype,
                                   last_only=last_only)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_other_rate_parts_and_damping(backend):
    """Theorem 2 / 3 parts (trained weights through their own parameterizations), a damped
    feedback (Corollary 2) and an off-diagonal mask."""
    for part in (SymmetricSubnetwork, ProductSubnetwork):
        torch.manual_seed(0)
        assembly = Assembly([part(4, "tanh"), part(4, "tanh"), part(4, "tanh")],
                            mask="off-diagonal", damping=True, feedback_init_std=0.2)
        layer = NetworkOfNetworks(2, assembly, step_size=0.1)
        engine, loop = perturbed_pair(layer, torch.float64, seed=3, scale=0.05)
        with use_backend(available(backend)):
            assert_matches(engine, loop, steps=15, batch=3, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_forward_only_and_stepping_the_cell(backend):
    layer = SVDComboNet(2, num_subnetworks=3, subnetwork_size=4, feedback_init_std=0.3)
    engine, loop = perturbed_pair(layer, torch.float64, seed=4)
    inputs = torch.randn(20, 3, 2, dtype=torch.float64)
    with use_backend(available(backend)), torch.no_grad():
        output, _ = engine(inputs)
        torch.testing.assert_close(output, loop(inputs)[0], rtol=1e-10, atol=1e-12)
        hidden = torch.zeros(3, engine.hidden_size, dtype=torch.float64)
        for t in range(20):
            hidden = engine.cell(inputs[t], hidden)
            torch.testing.assert_close(output[t], hidden, rtol=1e-10, atol=1e-12)


def unsupported_layers():
    torch.manual_seed(0)
    yield "sizes", NetworkOfNetworks(2, Assembly([SVDSubnetwork(3), SVDSubnetwork(4)]))
    yield "activations", NetworkOfNetworks(
        2, Assembly([SVDSubnetwork(3, "relu"), SVDSubnetwork(3, "tanh")]))
    connection = HierarchicalConnection(0, 1, 3, 3, gain=0.1)
    yield "connections", NetworkOfNetworks(
        2, Assembly([SVDSubnetwork(3), SVDSubnetwork(3)], connections=[connection]))


@pytest.mark.parametrize("name,layer", list(unsupported_layers()))
def test_unsupported_configurations_fall_back_to_the_loop(name, layer):
    inputs = torch.randn(6, 2, 2)
    assert isinstance(layer.cell.engine_plan(), str)  # the reason the engine does not run it
    assert run_cell(layer.cell, inputs, torch.zeros(2, layer.hidden_size)) is None
    loop = copy.deepcopy(layer)
    loop.engine = "loop"
    torch.testing.assert_close(layer(inputs)[0], loop(inputs)[0], rtol=0, atol=0)


def test_engine_argument_passes_through_combo_nets():
    assert SVDComboNet(1, num_subnetworks=2, subnetwork_size=2, engine="loop").engine == "loop"
    assert SparseComboNet(1, num_subnetworks=2, subnetwork_size=4, density=0.2, seed=0,
                          engine="loop").engine == "loop"
    with pytest.raises(ValueError, match="engine"):
        SVDComboNet(1, num_subnetworks=2, subnetwork_size=2, engine="cuda")


RECURRENCES = {"euler": network_euler, "rk2": network_rk2, "splitting": network_splitting}


@pytest.mark.parametrize("method", list(RECURRENCES))
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("backend", ["native", "python"])
@pytest.mark.parametrize("activation", ["relu", "tanh", pytest.param("sigmoid", marks=SLOW),
                                        pytest.param("softplus", marks=SLOW)])
def test_gradcheck(backend, activation, fused, method):
    """Finite differences in float64 on the operator: projected inputs, or raw inputs with the
    input layer applied inside the loop."""
    run = RECURRENCES[method]
    generator = torch.Generator().manual_seed(1)

    def make(*shape, scale=1.0):
        tensor = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
        return tensor.requires_grad_(True)

    x0, feedback, blocks = make(2, 6), make(6, 6, scale=0.3), make(3, 2, 2, scale=0.5)
    if fused:
        args = (make(5, 2, 3), x0, feedback, blocks, make(6, 3), make(6))
        function = (lambda u, x, f, b, weight, bias: run(
            u, x, f, b, 0.2, activation, input_weight=weight, input_bias=bias,
            backend=available(backend)))
    else:
        args = (make(5, 2, 6), x0, feedback, blocks)
        function = lambda *a: run(*a, 0.2, activation, backend=available(backend))  # noqa: E731
    assert torch.autograd.gradcheck(function, args)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_wide_inputs_projected_before_the_loop(backend):
    from stablernn.engine.dispatch import MAX_FUSED_INPUT

    layer = SVDComboNet(MAX_FUSED_INPUT + 5, num_subnetworks=2, subnetwork_size=3,
                        feedback_init_std=0.3)
    engine, loop = perturbed_pair(layer, torch.float64, seed=5)
    with use_backend(available(backend)):
        assert_matches(engine, loop, steps=8, batch=2, dtype=torch.float64)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_splitting_engine_matches_the_loop_in_states_and_gradients(activation):
    from stablernn import SVDComboNet

    torch.manual_seed(0)
    net = SVDComboNet(2, 4, 8, step_size=0.3, method="splitting", activation=activation,
                      feedback_init_std=0.3).double()
    inputs = torch.randn(20, 3, 2, dtype=torch.float64)
    h0 = torch.randn(1, 3, 32, dtype=torch.float64)
    results = []
    for engine in ("auto", "loop"):
        net.engine = engine
        net.zero_grad()
        output, last = net(inputs, h0)
        (output.pow(2).sum() + last.sin().sum()).backward()
        results.append((output.detach(), [p.grad.clone() for p in net.parameters()]))
    (out_engine, grads_engine), (out_loop, grads_loop) = results
    assert torch.allclose(out_engine, out_loop, atol=1e-12)
    for engine_grad, loop_grad in zip(grads_engine, grads_loop):
        assert torch.allclose(engine_grad, loop_grad, atol=1e-10)


@pytest.mark.parametrize("last_only", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=SLOW)])
@pytest.mark.parametrize("net", ["sparse", "svd"])
@pytest.mark.parametrize("method", ["rk2", "splitting"])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_rk2_and_splitting_match_the_loop(backend, method, net, dtype, last_only):
    """The networks' RK2 (explicit midpoint) and splitting steps on the engine, both paths:
    states and every gradient as the plain loop computes them, Sparse (fixed blocks) and SVD
    (trained blocks)."""
    torch.manual_seed(3)
    if net == "sparse":
        layer = SparseComboNet(2, num_subnetworks=3, subnetwork_size=4, density=0.5, seed=1,
                               step_size=0.2, method=method, feedback_init_std=0.3)
    else:
        layer = SVDComboNet(2, num_subnetworks=3, subnetwork_size=4, step_size=0.2,
                            method=method, feedback_init_std=0.3)
    assert layer.cell.engine_plan().method == method
    engine, loop = perturbed_pair(layer, dtype, seed=6, scale=0.1)
    with use_backend(available(backend)):
        assert_matches(engine, loop, steps=40, batch=3, dtype=dtype, last_only=last_only)


@pytest.mark.parametrize("method", list(RECURRENCES))
@pytest.mark.parametrize("backend", ["native", "python"])
def test_the_network_recurrences_are_registered_torch_operators(method, backend):
    """torch.library's own check of each network operator (schema, shapes, autograd)."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)

    operator = getattr(torch.ops.stablernn, f"network_{method}")
    args = (tensor(5, 3, 2), tensor(6, 2), tensor(6), tensor(3, 6), tensor(6, 6),
            tensor(3, 2, 2), 0.1, "tanh", available(backend), True, True)
    torch.library.opcheck(operator.default, args)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "splitting"])
def test_torch_compile_runs_a_combo_net_without_a_graph_break(method):
    """``torch.compile(model, fullgraph=True)`` trains an SVD Combo Net through the engine's
    operators, with the eager model's outputs and gradients."""
    from test_engine_lipschitz import assert_compiles_like_eager

    from stablernn.models.readouts import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier(SVDComboNet(1, num_subnetworks=2, subnetwork_size=4,
                                           method=method, check_finite=False), 3)
    assert_compiles_like_eager(model, torch.randn(10, 4, 1))
