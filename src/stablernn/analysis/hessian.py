"""The Hessian of a loss over chosen parameters: extreme eigenvalues, trace, condition number.

Paper 002, section 7 and table 3 report ``lambda_max(H)``, ``tr(H)`` and
``kappa(H) = lambda_max(H) / lambda_min(H)`` of the training loss, "with respect to the model
parameters of the recurrent unit", computed with PyHessian (Yao et al. 2020). Here:

- products ``H v`` by double backward (Pearlmutter 1994), never forming ``H``;
- the largest eigenvalues (``which="LA"``) and the smallest one (``which="SA"``) by implicitly
  restarted Lanczos, ``scipy.sparse.linalg.eigsh`` (ARPACK) on a ``LinearOperator`` whose matvec
  is ``H v`` (PyHessian uses power iteration with deflation instead);
- the trace by Hutchinson's estimator with Rademacher vectors (as PyHessian), with the standard
  error of the mean reported.

See ``docs/analysis.md`` for the estimators, their error and the condition number when
``lambda_min <= 0``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor, nn

from stablernn._checks import check_int, check_non_negative, check_positive_int
from stablernn.models.recurrent import RecurrentLayer

# kappa is reported only when lambda_min exceeds this many machine epsilons (of the parameters'
# dtype) times |lambda_max|: below that, lambda_min is indistinguishable from 0 in the products.
ZERO_EIGENVALUE_ULPS = 100


@dataclass
class HessianSpectrum:
    """Summary of the Hessian ``H`` of a loss at one point (paper 002, table 3).

    - ``top_eigenvalues``: the ``top_k`` largest (algebraic) eigenvalues, descending;
      ``top_eigenvalues[0]`` is the paper's ``lambda_max(H)``.
    - ``min_eigenvalue``: the smallest (algebraic) eigenvalue ``lambda_min(H)``.
    - ``trace``: Hutchinson's estimate of ``tr(H)``, with ``trace_std_error`` the standard error
      of that mean over ``samples`` Rademacher vectors.
    - ``condition_number``: ``kappa(H) = lambda_max / lambda_min`` as the paper defines it, or
      ``None`` when ``lambda_min`` is not positive (beyond ``ZERO_EIGENVALUE_ULPS`` machine
      epsilons times ``|lambda_max|``): the loss is then not locally convex and the ratio
      does not measure the spread of the spectrum.
    - ``num_parameters``: the dimension of ``H``; ``method``: how the eigenvalues were computed.
    """

    top_eigenvalues: list[float]
    min_eigenvalue: float
    trace: float
    trace_std_error: float
    condition_number: float | None
    num_parameters: int
    samples: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def recurrent_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters of the recurrent unit, the set paper 002 (section 7) takes the
    Hessian over, as ``(name, parameter)`` pairs.

    For a model with a recurrent layer in ``model.rnn`` (:class:`~stablernn.SequenceClassifier`,
    :class:`~stablernn.PerStepReadout`): the parameters of ``model.rnn``, named ``"rnn.<name>"``;
    the readout ``y = D h`` is excluded. A recurrent layer on its own (a stablernn layer,
    ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``): all its parameters. Included are the free parameters
    as trained, e.g. for :class:`~stablernn.LipschitzRNN` the free matrices ``M_A``, ``M_W``
    (``cell.param_a.free``, and ``cell.param_w.inner.free``, or ``cell.param_w.free`` with
    ``parametrization="paper"``; ``A`` is linear in ``M_A``, eq. 6) and
    the input map ``U``, ``b`` (``cell.input_projection``). Buffers are not parameters.
    """
    rnn = getattr(model, "rnn", None)
    if isinstance(rnn, nn.Module):
        unit, prefix = rnn, "rnn."
    elif isinstance(model, (RecurrentLayer, nn.RNNBase)):
        unit, prefix = model, ""
    else:
        raise ValueError(  # noqa: TRY004 - stablernn reports every bad argument as ValueError
            f"model must be a recurrent layer or have one in model.rnn (e.g. a "
            f"SequenceClassifier), got {type(model).__name__}"
        )
    named = [(prefix + name, p) for name, p in unit.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(
            f"the recurrent unit of {type(model).__name__} has no trainable parameters")
    return named


@contextlib.contextmanager
def _twice_differentiable(model: nn.Module) -> Iterator[None]:
    """Evaluation mode, and the plain loop instead of the recurrence engine (whose hand-written
    backward is differentiable once only); both restored afterwards."""
    was_training = model.training
    engines = [(m, m.engine) for m in model.modules() if getattr(m, "engine", None) == "auto"]
    model.eval()
    for module, _ in engines:
        module.engine = "loop"
    try:
        yield
    finally:
        for module, engine in engines:
            module.engine = engine
        model.train(was_training)


def loss_closure(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
) -> Callable[[], Tensor]:
    """``closure() -> loss(model(inputs), targets)``, a scalar that can be differentiated twice.

    Each call runs the model in evaluation mode on the plain loop (layers with
    ``engine="auto"`` are switched to ``"loop"``: the engine's backward is differentiable once
    only), then restores the model's mode and engines. The loss is over all of ``inputs`` at once,
    as PyHessian's single-batch mode.
    """

    def closure() -> Tensor:
        with _twice_differentiable(model):
            return loss(model(inputs), targets)

    return closure


def _check_params(params: Sequence[Tensor]) -> list[Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params must be a non-empty list of tensors, got an empty list")
    for i, p in enumerate(params):
        if not isinstance(p, Tensor) or not p.is_floating_point() or not p.requires_grad:
            given = (f"a tensor with dtype={p.dtype}, requires_grad={p.requires_grad}"
                     if isinstance(p, Tensor) else type(p).__name__)
            raise ValueError(
                f"params[{i}] must be a floating-point tensor with requires_grad=True, got {given}")
    return params


def _check_twice_differentiable(gradients: list[Tensor]) -> None:
    """Refuse gradients computed through a backward that is differentiable once only
    (``torch.autograd.function.once_differentiable``): autograd marks its outputs with an
    ``Error`` node that is pruned from ``autograd.grad(..., params)``, so the second derivatives
    through it would be silently dropped, not reported. (The recurrence engine's operators raise
    with the reason themselves when a second derivative reaches their backward.)"""
    stack, seen = [g.grad_fn for g in gradients if g.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "Error":
            raise RuntimeError(
                "the loss cannot be differentiated twice: its gradient passes through a backward "
                "that is differentiable once only (e.g. stablernn's recurrence engine, "
                "engine='auto'), whose second derivatives would be dropped. Build the loss with "
                "stablernn.analysis.loss_closure (it runs the plain loop), or construct the "
                "layer with engine='loop'"
            )
        stack.extend(child for child, _ in node.next_functions if child is not None)


class _HessianOperator:
    """Products ``H v`` at one point: the gradient graph is built once (``create_graph=True``)
    and each product is one backward pass through it."""

    def __init__(self, loss_fn: Callable[[], Tensor], params: list[Tensor]) -> None:
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn() must return a scalar tensor, got {shape}")
        self.params = params
        self.pairs: list[tuple[int, Tensor]] = []
        if loss.requires_grad:
            grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True,
                                        allow_unused=True)
            # A gradient that is None or constant has a zero block of H.
            self.pairs = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
            _check_twice_differentiable([g for _, g in self.pairs])

    def __call__(self, vector: list[Tensor]) -> list[Tensor]:
        products: list[Tensor | None] = [None] * len(self.params)
        if self.pairs:
            products = list(torch.autograd.grad(
                [g for _, g in self.pairs], self.params,
                grad_outputs=[vector[i] for i, _ in self.pairs],
                retain_graph=True, allow_unused=True,
            ))
        return [torch.zeros_like(p) if h is None else h.detach()
                for p, h in zip(self.params, products)]


def _check_vector(vector: Sequence[Tensor], params: list[Tensor]) -> list[Tensor]:
    vector = list(vector)
    if len(vector) != len(params):
        raise ValueError(
            f"vector must have one tensor per parameter ({len(params)}), got {len(vector)}")
    for i, (v, p) in enumerate(zip(vector, params)):
        if not isinstance(v, Tensor) or v.shape != p.shape:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(
                f"vector[{i}] must have shape {tuple(p.shape)} like params[{i}], got {shape}")
    return [v.detach().to(dtype=p.dtype, device=p.device) for v, p in zip(vector, params)]


def hessian_vector_product(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], vector: Sequence[Tensor]
) -> list[Tensor]:
    """``H v`` with ``H`` the Hessian of ``loss_fn()`` over ``params`` (Pearlmutter 1994):
    ``H v = d/dp (grad_p L . v)``, by two ``torch.autograd.grad`` calls (the first with
    ``create_graph=True``). ``vector``: one tensor per parameter, shaped like it. Parameters the
    loss does not depend on get zero products."""
    params = _check_params(params)
    vector = _check_vector(vector, params)
    return _HessianOperator(loss_fn, params)(vector)


def _flatten(tensors: list[Tensor]) -> np.ndarray:
    return torch.cat([t.reshape(-1) for t in tensors]).to("cpu", torch.float64).numpy()


def _unflatten(array: np.ndarray, params: list[Tensor]) -> list[Tensor]:
    flat = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    pieces = flat.split([p.numel() for p in params])
    return [piece.reshape(p.shape).to(dtype=p.dtype, device=p.device)
            for piece, p in zip(pieces, params)]


def _lanczos(operator: LinearOperator, k: int, which: str, tol: float, max_iter: int,
             start: np.ndarray) -> np.ndarray:
    try:
        values = eigsh(operator, k=k, which=which, tol=tol, maxiter=max_iter, v0=start,
                       return_eigenvectors=False)
    except ArpackNoConvergence as error:
        raise RuntimeError(
            f"Lanczos (scipy eigsh, which={which!r}) found {len(error.eigenvalues)} of {k} "
            f"eigenvalue(s) within tol={tol} in max_iter={max_iter} restarts; raise max_iter or tol"
        ) from error
    return np.sort(values)


def _hutchinson(matvec: Callable[[np.ndarray], np.ndarray], n: int, samples: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """``tr(H) ~ mean_i v_i^T H v_i`` over Rademacher ``v_i`` (Hutchinson 1990), and the standard
    error of that mean, ``std(v_i^T H v_i) / sqrt(samples)``."""
    quadratic_forms = np.empty(samples)
    for i in range(samples):
        v = rng.integers(0, 2, size=n).astype(np.float64) * 2.0 - 1.0
        quadratic_forms[i] = v @ matvec(v)
    return float(quadratic_forms.mean()), float(quadratic_forms.std(ddof=1) / math.sqrt(samples))


def hessian_spectrum(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    top_k: int = 1,
    trace_samples: int = 100,
    tol: float = 1e-4,
    max_iter: int = 200,
    seed: int = 0,
) -> HessianSpectrum:
    """Extreme eigenvalues, trace and condition number of the Hessian of ``loss_fn()`` over
    ``params`` (paper 002, table 3).

    - ``top_k`` largest eigenvalues and the smallest: Lanczos (``scipy.sparse.linalg.eigsh``,
      ``which="LA"`` / ``"SA"``) on ``H v`` products in float64 at the numpy boundary; ``tol``
      is eigsh's relative accuracy (0: machine precision), ``max_iter`` its restart limit. ARPACK
      needs ``top_k < num_parameters``; when ``top_k == num_parameters`` the matrix is built
      column by column from ``num_parameters`` products and diagonalized exactly (``method``
      says which ran).
    - ``trace``: Hutchinson's estimator over ``trace_samples`` Rademacher vectors, with its
      standard error.
    - ``condition_number``: ``lambda_max / lambda_min``, or ``None`` when ``lambda_min`` is not
      positive (see :class:`HessianSpectrum`).

    Deterministic for a given ``seed`` (the Lanczos start vector and the Rademacher vectors).
    Use float64 parameters for small eigenvalues: the products carry the rounding of the
    parameters' dtype.
    """
    params = _check_params(params)
    top_k = check_positive_int("top_k", top_k)
    trace_samples = check_int("trace_samples (2 or more, for a standard error)", trace_samples, 2)
    tol = check_non_negative("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    n = sum(p.numel() for p in params)
    if top_k > n:
        raise ValueError(f"top_k must be <= the number of parameters ({n}), got {top_k}")
    lanczos_seed, trace_seed = np.random.SeedSequence(seed).spawn(2)
    lanczos_rng, trace_rng = np.random.default_rng(lanczos_seed), np.random.default_rng(trace_seed)

    hessian = _HessianOperator(loss_fn, params)

    def matvec(x: np.ndarray) -> np.ndarray:
        return _flatten(hessian(_unflatten(x.reshape(-1), params)))

    if top_k < n:
        operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        start = lanczos_rng.standard_normal(n)
        top = _lanczos(operator, top_k, "LA", tol, max_iter, start)[::-1]
        lowest = float(_lanczos(operator, 1, "SA", tol, max_iter, start)[0])
        method = "lanczos (scipy.sparse.linalg.eigsh, ARPACK)"
    else:
        dense = np.column_stack([matvec(column) for column in np.eye(n)])
        eigenvalues = np.linalg.eigvalsh(0.5 * (dense + dense.T))
        top, lowest = eigenvalues[::-1][:top_k], float(eigenvalues[0])
        method = "dense (numpy.linalg.eigvalsh of the matrix of H e_i products)"
    trace, trace_std_error = _hutchinson(matvec, n, trace_samples, trace_rng)

    largest = float(top[0])
    epsilon = max(torch.finfo(p.dtype).eps for p in params)
    resolution = ZERO_EIGENVALUE_ULPS * epsilon * abs(largest)
    condition_number = largest / lowest if lowest > resolution else None
    return HessianSpectrum(
        top_eigenvalues=[float(v) for v in top], min_eigenvalue=lowest, trace=trace,
        trace_std_error=trace_std_error, condition_number=condition_number, num_parameters=n,
        samples=trace_samples, method=method,
    )
