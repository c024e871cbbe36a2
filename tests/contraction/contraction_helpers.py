"""Independent numerical checks used by the contraction tests (no stablernn code inside)."""

from __future__ import annotations

import itertools

import numpy as np


def slope_samples(n: int, g: float, rng: np.random.Generator, n_random: int = 200,
                  vertex_limit: int = 10) -> np.ndarray:
    """All vertices of [0, g]^n (or 64 random ones for large n) plus random interior points."""
    if n <= vertex_limit:
        vertices = np.array(list(itertools.product((0.0, g), repeat=n)))
    else:
        vertices = np.where(rng.random((64, n)) < 0.5, 0.0, g)
    interior = rng.uniform(0.0, g, (n_random, n))
    return np.concatenate([vertices, interior])


def worst_lmi(jacobians: np.ndarray, metric: np.ndarray, rate: float) -> float:
    """max over J of lambda_max(L^{-1} (M J + J^T M + 2 rate M) L^{-T}), M = L L^T."""
    lower = np.linalg.cholesky(metric)
    inverse = np.linalg.inv(lower)
    x = metric @ jacobians + jacobians.transpose(0, 2, 1) @ metric + 2 * rate * metric
    y = inverse @ x @ inverse.T
    return float(np.linalg.eigvalsh(0.5 * (y + y.transpose(0, 2, 1)))[:, -1].max())


def rnn_jacobians(weight: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    n = weight.shape[0]
    return -np.eye(n) + weight[None, :, :] * slopes[:, None, :]


def assert_rnn_lmi(weight, g, metric, rate, rng, *, rel=1e-8) -> None:
    """M J + J^T M <= -2 rate M for J = -I + W D at the vertices and random D in [0, g]."""
    weight = np.asarray(weight, float)
    slopes = slope_samples(weight.shape[0], g, rng)
    value = worst_lmi(rnn_jacobians(weight, slopes), metric, rate)
    scale = 1 + np.abs(weight).max() * g * np.linalg.cond(metric)
    assert value <= rel * scale, f"LMI violated: {value}"


def random_hurwitz_metzler(rng: np.random.Generator, n: int) -> np.ndarray:
    density = rng.uniform(0.1, 1.0)
    off = rng.exponential(rng.uniform(0.1, 5.0), (n, n)) * (rng.random((n, n)) < density)
    np.fill_diagonal(off, 0.0)
    a = off + np.diag(rng.normal(0.0, 2.0, n))
    abscissa = np.linalg.eigvals(a).real.max()
    margin = 10 ** rng.uniform(-3, 1)
    return a - (abscissa + margin) * np.eye(n)
