r"""Empirical contraction test: run pairs of trajectories under the same input, fit the decay.

For a model with the ``torch.nn.RNN`` calling convention (``model(inputs, h0) -> (output, h_n)``,
inputs ``(T, B, F)`` time first, ``h0`` ``(1, B, N)``, ``output`` the full state at every step),
:func:`empirical_rate` draws ``2 * n_pairs`` random initial states for every sequence of the
batch, runs them all under the same input, and measures the metric distance
``|x_a(t) - x_b(t)|_M`` of each pair at ``t = 0, 1, ..., T`` steps. The time of step k is
``k * time_step`` (the model's step size by default), so the rates are per unit of model time,
comparable with :attr:`Certificate.rate`.

Two rates per pair:

- ``rates``: least-squares slope of ``-log distance`` against time (the fitted decay rate);
- ``worst_rates``: ``min_k -log(d_k / d_0) / t_k``, the smallest average rate from the start.
  A certificate that the discrete map contracts with factor rho per step guarantees
  ``worst_rates >= -log(rho) / time_step`` for every pair, with no fitting error.

Distances stop being informative once they reach the floating-point resolution of the states;
each pair's series is cut at the first step whose distance is below
``100 * eps(dtype) * (|x_a| + |x_b|)`` (a pair that merges at once gets rate ``inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from stablernn._checks import check_positive, check_positive_int
from stablernn.contraction._inputs import check_metric


@dataclass(frozen=True)
class EmpiricalRate:
    """Measured contraction of a model.

    Attributes:
        rate: the smallest fitted rate over all pairs (a conservative summary); negative
            when some pair drifts apart.
        rates: fitted rate per pair, shape (n_pairs * B,).
        worst_rates: per pair, ``min_k -log(d_k/d_0) / t_k`` over the resolved steps.
        times: (T + 1,) model times ``k * time_step``.
        distances: (T + 1, n_pairs * B) metric distances.
        time_step: the model time of one step.
    """

    rate: float
    rates: np.ndarray
    worst_rates: np.ndarray
    times: np.ndarray
    distances: np.ndarray
    time_step: float

    @property
    def worst_rate(self) -> float:
        return float(self.worst_rates.min())


def empirical_rate(
    model,
    inputs: torch.Tensor,
    n_pairs: int = 8,
    metric=None,
    *,
    time_step: float | None = None,
    hidden_size: int | None = None,
    scale: float = 1.0,
    seed: int = 0,
) -> EmpiricalRate:
    """Fit the exponential decay of distances between trajectories of ``model`` (see module).

    Args:
        model: ``model(inputs, h0) -> (output, h_n)``, time first (a model with
            ``batch_first=True`` is handled by transposing).
        inputs: ``(T, B, F)`` tensor; every pair sees the same sequence.
        n_pairs: pairs of initial states per sequence.
        metric: N x N positive definite metric (identity when None).
        time_step: model time of one step; default ``getattr(model, "step_size", 1.0)``.
        hidden_size: N; default ``model.hidden_size``.
        scale: initial states are ``scale * N(0, I)``.
        seed: seed of the initial states (a local generator; global RNG untouched).
    """
    n_pairs = check_positive_int("n_pairs", n_pairs)
    scale = check_positive("scale", scale)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3:
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
        raise ValueError(f"inputs must be a tensor of shape (T, B, F), got {shape}")
    steps, batch, _ = inputs.shape
    if steps < 1 or batch < 1:
        raise ValueError(f"inputs must have T >= 1 and B >= 1, got shape {tuple(inputs.shape)}")
    if time_step is None:
        time_step = getattr(model, "step_size", 1.0)
    time_step = check_positive("time_step", time_step)
    if hidden_size is None:
        hidden_size = getattr(model, "hidden_size", None)
        if hidden_size is None:
            raise ValueError("hidden_size must be given: the model has no attribute hidden_size")
    n = check_positive_int("hidden_size", int(hidden_size))
    metric = np.eye(n) if metric is None else check_metric("metric", metric, n)

    copies = 2 * n_pairs
    repeated = inputs.repeat(1, copies, 1)  # batch index = copy * B + b
    generator = torch.Generator(device="cpu").manual_seed(seed)
    h0 = scale * torch.randn(1, copies * batch, n, generator=generator, dtype=inputs.dtype)
    h0 = h0.to(inputs.device)
    batch_first = bool(getattr(model, "batch_first", False))
    with torch.no_grad():
        if batch_first:
            output, _ = model(repeated.transpose(0, 1), h0)
            output = output.transpose(0, 1)
        else:
            output, _ = model(repeated, h0)
    if tuple(output.shape) != (steps, copies * batch, n):
        raise ValueError(
            f"the model's output must have shape (T, B, N) = {(steps, copies * batch, n)}, "
            f"got {tuple(output.shape)}"
        )
    states = torch.cat([h0, output], dim=0).detach().to("cpu", torch.float64).numpy()
    states = states.reshape(steps + 1, n_pairs, 2, batch, n)
    first, second = states[:, :, 0], states[:, :, 1]
    difference = (first - second).reshape(steps + 1, n_pairs * batch, n)
    distances = np.sqrt(np.einsum("tpi,ij,tpj->tp", difference, metric, difference))
    resolution = 100 * torch.finfo(inputs.dtype).eps * (
        np.linalg.norm(first, axis=-1) + np.linalg.norm(second, axis=-1)
    ).reshape(steps + 1, n_pairs * batch)
    euclidean = np.linalg.norm(difference, axis=-1)
    times = np.arange(steps + 1) * time_step

    rates = np.empty(n_pairs * batch)
    worst = np.empty(n_pairs * batch)
    for pair in range(n_pairs * batch):
        resolved = euclidean[:, pair] > resolution[:, pair]
        end = int(np.argmin(resolved)) if not resolved.all() else steps + 1
        if end < 2:
            rates[pair] = worst[pair] = math.inf
            continue
        log_distance = np.log(distances[:end, pair])
        t = times[:end]
        slope = np.polyfit(t, log_distance, 1)[0]
        rates[pair] = -slope
        worst[pair] = float(np.min(-(log_distance[1:] - log_distance[0]) / t[1:]))
    return EmpiricalRate(float(rates.min()), rates, worst, times, distances, time_step)
