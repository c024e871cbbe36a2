"""The engine against the plain loop for the Lipschitz RNN (paper 002, eq. 9 and the RK2 step of
eq. 10): states and every gradient autograd computes on the loop, for both engine paths (native
C++ and pure PyTorch)."""

import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stablernn.engine import lipschitz_euler, lipschitz_rk2, native, use_backend
from stablernn.models.lipschitz import LipschitzRNN
from stablernn.models.readouts import SequenceClassifier

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def available(backend: str) -> str:
    """The backend to test: native falls back to python where it cannot build (the build itself
    is checked by test_engine_backends.py)."""
    return backend if backend == "python" or native.load() is not None else "python"


def relative_error(got: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """Largest deviation over the largest entry of ``expected`` (floored at ``floor``: a
    gradient that is zero in exact arithmetic is compared with the scale of the others)."""
    scale = max(expected.abs().max().item(), floor)
    return (got - expected).abs().max().item() / (scale if scale > 0 else 1.0)


def run_and_grad(layer, inputs, h0, weights):
    """Output, h_n, and the gradients of a loss that reaches every state, of every parameter,
    of the input and of h0."""
    for parameter in layer.parameters():
        parameter.grad = None
    inputs = inputs.detach().requires_grad_(True)
    h0 = h0.detach().requires_grad_(True)
    output, last = layer(inputs, h0)
    loss = (output * weights).sum() + (output ** 2).sum() + last.pow(3).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    grads["input"], grads["h0"] = inputs.grad.clone(), h0.grad.clone()
    return output.detach(), last.detach(), grads


def assert_matches(layer_engine, layer_loop, inputs, h0, dtype):
    """States and gradients of the engine equal the loop's to TOLERANCE (relative). States are
    measured against the size of h0 at least: a state that is a near-cancelling sum of h_t and
    step_size * f carries the rounding error of those terms, not of itself. In float32
    the loop's own rounding error can exceed 1e-5 on a small gradient that is a sum of larger
    terms; such a gradient passes when the engine is as close to the float64 loop (the truth, to
    float32 precision) as 1e-5 relative or as twice the float32 loop's own error."""
    weights = torch.randn(inputs.shape[:2] + (layer_loop.hidden_size,), dtype=dtype)
    out_e, last_e, grads_e = run_and_grad(layer_engine, inputs, h0, weights)
    out_l, last_l, grads_l = run_and_grad(layer_loop, inputs, h0, weights)
    tol = TOLERANCE[dtype]
    state_scale = h0.abs().max().item()
    assert relative_error(out_e, out_l, state_scale) < tol
    assert relative_error(last_e, last_l, state_scale) < tol
    assert set(grads_e) == set(grads_l)
    floor = 1e-2 * max(g.abs().max().item() for g in grads_l.values())
    reference = None
    for name in grads_l:
        if relative_error(grads_e[name], grads_l[name], floor) < tol:
            continue
        assert dtype == torch.float32, name
        if reference is None:
            reference = run_and_grad(copy.deepcopy(layer_loop).double(), inputs.double(),
                                     h0.double(), weights.double())[2]
        truth = reference[name]
        engine_error = (grads_e[name].double() - truth).abs().max().item()
        loop_error = (grads_l[name].double() - truth).abs().max().item()
        scale = max(truth.abs().max().item(), floor)
        assert engine_error <= max(2 * loop_error, tol * scale), (name, engine_error, loop_error)


def make_pair(input_size, hidden, step_size, alpha, dtype, seed, bias=True, method="euler"):
    torch.manual_seed(seed)
    loop = LipschitzRNN(input_size, hidden, step_size=step_size, alpha=alpha, bias=bias,
                        method=method, parametrization="paper", engine="loop").to(dtype)
    with torch.no_grad():  # away from the near -gamma I initialization
        for parameter in loop.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter) / hidden ** 0.5)
    engine = copy.deepcopy(loop)
    engine.engine = "auto"
    return engine, loop


@settings(max_examples=40, deadline=None)
@example(seed=0, steps=1, batch=1, hidden=1, input_size=1, step_size=0.5, alpha=0.0,
         dtype=torch.float64, backend="native", bias=True,
         method="euler")  # float64 input-layer gradients once aliased each other (CI)
@example(seed=1, steps=1, batch=1, hidden=1, input_size=1, step_size=0.2109375, alpha=0.0,
         dtype=torch.float32, backend="native", bias=False,
         method="euler")  # a state of -4e-4 from h0 = 0.13: cancellation, not an engine error (CI)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 30), batch=st.integers(1, 5),
       hidden=st.integers(1, 12), input_size=st.integers(1, 4),
       step_size=st.floats(0.01, 0.5), alpha=st.floats(0.0, 1.5),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       backend=st.sampled_from(["native", "python"]), bias=st.booleans(),
       method=st.sampled_from(["euler", "rk2"]))
def test_engine_matches_loop_states_and_gradients(seed, steps, batch, hidden, input_size,
                                                  step_size, alpha, dtype, backend, bias, method):
    engine, loop = make_pair(input_size, hidden, step_size, alpha, dtype, seed, bias, method)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(steps, batch, input_size, generator=generator).to(dtype)
    h0 = 0.5 * torch.randn(1, batch, hidden, generator=generator).to(dtype)
    with use_backend(available(backend)):
        assert_matches(engine, loop, inputs, h0, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["native", "python"])
def test_long_sequence_float32(backend):
    """T = 300 at the paper's width: the float32 gradients still agree to 1e-5."""
    engine, loop = make_pair(1, 64, 0.03, 1.0, torch.float32, seed=4)
    inputs = torch.randn(300, 8, 1)
    with use_backend(available(backend)):
        assert_matches(engine, loop, inputs, torch.zeros(1, 8, 64), torch.float32)


def loss_of(output, last, weights, on):
    """A loss on every state and the last one, or on the last state alone (a classifier's
    loss: the engine then gets no gradient for the other states and builds none)."""
    if on == "last":
        return (last * weights[-1]).sum() + last.pow(2).sum()
    return (output * weights).sum() + last.pow(2).sum()


@pytest.mark.parametrize("method", ["euler", pytest.param("rk2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("loss_on", ["states", "last"])
@pytest.mark.parametrize("steps", [1, 31, 32, 33, 100])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_inputs_without_grad_match_loop(steps, backend, loss_on, method):
    """Training as it is done (inputs that need no gradient): the native kernels then keep the
    per-step gradient rows in chunks of 32 steps; chunk edges and a partial last chunk agree with
    the loop, with a loss on every state or on the last state only."""
    for dtype in (torch.float64, torch.float32):
        engine, loop = make_pair(3, 9, 0.2, 1.0, dtype, seed=steps, method=method)
        inputs = torch.randn(steps, 5, 3, dtype=dtype)
        weights = torch.randn(steps, 5, 9, dtype=dtype)
        gradients = []
        for layer in (engine, loop):
            layer.zero_grad()
            with use_backend(available(backend)):
                output, last = layer(inputs)
            loss_of(output, last, weights, loss_on).backward()
            gradients.append({name: p.grad.clone() for name, p in layer.named_parameters()})
        floor = 1e-2 * max(g.abs().max().item() for g in gradients[1].values())
        for name, expected in gradients[1].items():
            assert relative_error(gradients[0][name], expected, floor) < TOLERANCE[dtype], name


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("input_size", [2, 40])  # fused input layer, projected inputs
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_split_across_threads_matches_loop(input_size, threads, method):
    """On 2 threads the native kernels run the batch as two blocks of rows, one per thread, for
    the whole sequence (B = 701: uneven blocks); on 1 thread as one block, whose elementwise pass
    is split in row chunks (B N above 16,384). Both agree with the loop, in float64 and float32."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype in (torch.float64, torch.float32):
            engine, loop = make_pair(input_size, 24, 0.2, 1.0, dtype, seed=5, method=method)
            inputs = torch.randn(12, 701, input_size, dtype=dtype)
            h0 = 0.5 * torch.randn(1, 701, 24, dtype=dtype)
            with use_backend(available("native")):
                assert_matches(engine, loop, inputs, h0, dtype)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("input_size", [2, 40])  # fused input layer, projected inputs
def test_direct_mkl_products_match_aten(input_size, method):
    """Where torch has MKL, float32 step products call MKL's batched GEMM directly; states and
    every gradient equal those of the same kernels with each product through ATen (even and
    odd row blocks, a per-step gradient so that the backward adds G_{t-1})."""
    module = native.load()
    if module is None:
        pytest.skip("no native kernels here")
    # torch's MKL builds export the batched GEMM; then the direct path must be the one taken
    assert module.direct_gemm_available() == torch.backends.mkl.is_available()
    engine, _ = make_pair(input_size, 24, 0.2, 1.0, torch.float32, seed=3, method=method)
    inputs = torch.randn(9, 37, input_size)
    results = []
    for direct in (True, False):
        module.set_direct_gemm(direct)
        try:
            engine.zero_grad()
            with use_backend("native"):
                output, last = engine(inputs)
            (output.square().sum() + last.sum()).backward()
        finally:
            module.set_direct_gemm(True)
        results.append([output.detach(), *(p.grad.clone() for p in engine.parameters())])
    for direct, through_aten in zip(*results):
        torch.testing.assert_close(direct, through_aten, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["euler", "rk2", "exponential"])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_engine_matches_stepping_the_cell(backend, method):
    """The layer on the engine equals ``cell(x_t, h)`` applied step by step (the cell keeps
    stepping exactly as before)."""
    engine, _ = make_pair(3, 10, 0.1, 1.0, torch.float64, seed=2, method=method)
    inputs = torch.randn(25, 4, 3, dtype=torch.float64)
    with use_backend(available(backend)), torch.no_grad():
        output, _ = engine(inputs)
        hidden = torch.zeros(4, 10, dtype=torch.float64)
        for t in range(25):
            hidden = engine.cell(inputs[t], hidden)
            torch.testing.assert_close(output[t], hidden, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_forward_only_matches_loop(backend, method):
    engine, loop = make_pair(2, 16, 0.05, 1.0, torch.float32, seed=5, method=method)
    inputs = torch.randn(60, 7, 2)
    with use_backend(available(backend)), torch.no_grad():
        out_e, last_e = engine(inputs)
        out_l, last_l = loop(inputs)
    assert relative_error(out_e, out_l) < 1e-5 and relative_error(last_e, last_l) < 1e-5


@pytest.mark.parametrize("batch_first", [False, True])
def test_layouts_batch_first_and_unbatched(batch_first):
    engine, loop = make_pair(2, 6, 0.1, 1.0, torch.float64, seed=6)
    engine.batch_first = loop.batch_first = batch_first
    inputs = torch.randn(5, 9, 2, dtype=torch.float64)
    torch.testing.assert_close(engine(inputs)[0], loop(inputs)[0], rtol=1e-12, atol=1e-12)
    unbatched = torch.randn(9, 2, dtype=torch.float64)
    torch.testing.assert_close(engine(unbatched)[0], loop(unbatched)[0], rtol=1e-12, atol=1e-12)


def test_every_method_has_an_engine_plan():
    """Euler, RK2 and the exponential step all run on the engine: RK2 with the slope alpha A^T,
    the others with their transition matrix."""
    layer = LipschitzRNN(2, 5, method="rk2", alpha=0.5, parametrization="paper")
    plan = layer.cell.engine_plan()
    assert plan.method == "rk2"
    torch.testing.assert_close(plan.matrix_t, 0.5 * layer.A.t())
    for method in ("euler", "exponential"):
        cell = LipschitzRNN(2, 5, method=method, parametrization="paper").cell
        plan = cell.engine_plan()
        assert plan.method == "euler"
        torch.testing.assert_close(plan.matrix_t, cell.transition().t())


def test_engine_argument_is_checked():
    with pytest.raises(ValueError, match="engine"):
        LipschitzRNN(1, 4, engine="fast")


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_gradcheck(backend, fused, method):
    """Finite differences in float64 on the Function itself: projected inputs, or raw inputs
    with the input layer (weight, bias) applied inside the loop."""
    generator = torch.Generator().manual_seed(0)

    def make(*shape, scale=1.0):
        tensor = scale * torch.randn(*shape, generator=generator, dtype=torch.float64)
        return tensor.requires_grad_(True)

    h0 = make(3, 4)
    transition = (torch.eye(4, dtype=torch.float64) + 0.1 * make(4, 4)).detach().requires_grad_(True)
    recurrent = make(4, 4, scale=0.5)
    run = lipschitz_rk2 if method == "rk2" else lipschitz_euler
    if fused:
        args = (make(6, 3, 2), h0, transition, recurrent, make(4, 2), make(4))
        function = (lambda u, h, p, w, weight, bias: run(
            u, h, p, w, 0.2, input_weight=weight, input_bias=bias, backend=backend))
    else:
        args = (make(6, 3, 4), h0, transition, recurrent)
        function = lambda *a: run(*a, 0.2, backend=backend)  # noqa: E731
    with use_backend(available(backend)):
        assert torch.autograd.gradcheck(function, args)


@pytest.mark.parametrize("backend", ["native", "python"])
def test_wide_inputs_projected_before_the_loop(backend):
    """Inputs wider than MAX_FUSED_INPUT are projected by one matmul before the loop (the
    narrow ones, as in every test above, run the input layer inside the native loop)."""
    from stablernn.engine.dispatch import MAX_FUSED_INPUT

    engine, loop = make_pair(MAX_FUSED_INPUT + 8, 12, 0.1, 1.0, torch.float64, seed=7)
    inputs = torch.randn(10, 3, MAX_FUSED_INPUT + 8, dtype=torch.float64)
    with use_backend(available(backend)):
        assert_matches(engine, loop, inputs, torch.zeros(1, 3, 12, dtype=torch.float64),
                       torch.float64)


@pytest.mark.parametrize("method", ["euler", "rk2"])
@pytest.mark.parametrize("backend", ["native", "python"])
def test_the_engine_is_a_registered_torch_operator(backend, method):
    """torch.library's own check of the operator: schema, fake (shape) function and autograd
    registration agree with what it computes, on both paths."""
    from stablernn.engine.lipschitz import lipschitz_euler_op, lipschitz_rk2_op

    generator = torch.Generator().manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)

    args = (tensor(5, 3, 2), tensor(4, 2), tensor(4), tensor(3, 4), tensor(4, 4), tensor(4, 4),
            0.1, "tanh", backend, True, True)
    torch.library.opcheck(lipschitz_rk2_op if method == "rk2" else lipschitz_euler_op, args)
    assert getattr(torch.ops.stablernn, f"lipschitz_{method}").default is not None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "exponential", "rk2"])
def test_torch_compile_runs_the_engine_without_a_graph_break(method):
    """``torch.compile(model, fullgraph=True)`` (which refuses any graph break) trains a
    Lipschitz RNN through the engine's operator, with the eager model's outputs and gradients."""
    torch.manual_seed(0)
    model = SequenceClassifier(
        LipschitzRNN(1, 16, step_size=0.1, method=method, check_finite=False), 3)
    assert_compiles_like_eager(model, torch.randn(10, 4, 1))


def assert_compiles_like_eager(model, inputs):
    """``torch.compile(model, fullgraph=True)`` (which refuses any graph break) gives the eager
    model's outputs and parameter gradients for a loss on the outputs."""
    eager = copy.deepcopy(model)
    output = torch.compile(model, fullgraph=True)(inputs)
    output.square().sum().backward()
    expected = eager(inputs)
    expected.square().sum().backward()
    torch.testing.assert_close(output, expected)
    for (name, parameter), (_, reference) in zip(model.named_parameters(),
                                                 eager.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-5, atol=1e-6,
                                   msg=name)
