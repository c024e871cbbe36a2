"""Discrete time: the largest Euler step, the RK2 bound, and J^T M J - M < 0 (paper 000, A.2)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stablernn.contraction import (
    discrete_map_factor,
    discrete_rnn_family,
    euler_contraction_factor,
    max_euler_step,
    max_rk2_step,
    rk2_contraction_factor,
    rnn_family,
    theorem1,
    theorem5,
)
from stablernn.contraction.verification import all_vertices


def _metric_norm(metric, matrices):
    values, vectors = np.linalg.eigh(metric)
    root = (vectors * np.sqrt(values)) @ vectors.T
    inverse = (vectors / np.sqrt(values)) @ vectors.T
    return np.linalg.norm(root @ matrices @ inverse, 2, axis=(-2, -1))


def _contracting_example(rng, n, g):
    w = rng.uniform(-1, 1, (n, n))
    w *= rng.uniform(0.1, 0.9) / (g * np.abs(np.linalg.eigvals(np.abs(w))).max())
    result = theorem1(w, g)
    assert result.contracting
    return w, result


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(0.3, 3.0))
def test_max_euler_step_is_exact_at_the_vertices(seed, n, g):
    rng = np.random.default_rng(seed)
    w, result = _contracting_example(rng, n, g)
    family = rnn_family(w, g)
    bound = max_euler_step(family, result.metric)
    assert bound.exact and bound.max_step > 0
    vertices = family.jacobian(all_vertices(family))
    identity = np.eye(n)
    below = _metric_norm(result.metric, identity + 0.999 * bound.max_step * vertices).max()
    above = _metric_norm(result.metric, identity + 1.001 * bound.max_step * vertices).max()
    assert below < 1 <= above + 1e-12
    # random interior slopes: still contracting just below the step (convexity in d)
    interior = family.jacobian(rng.uniform(0, g, (200, n)))
    assert _metric_norm(result.metric, identity + 0.999 * bound.max_step * interior).max() < 1
    # the sound bound 2 rate / K^2 never exceeds the exact value
    sound = max_euler_step(family, result.metric, max_vertices=1)
    assert not sound.exact and 0 < sound.max_step <= bound.max_step * (1 + 1e-9)
    # the Euler factor below the step is < 1, exact and bounded versions agree in order
    step = 0.5 * bound.max_step
    exact = euler_contraction_factor(family, result.metric, step)
    bounded = euler_contraction_factor(family, result.metric, step, max_vertices=1)
    assert exact.holds and exact.factor <= bounded.factor + 1e-12


@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.floats(0.3, 2.0))
def test_rk2_bound_is_sound(seed, n, g):
    rng = np.random.default_rng(seed)
    w, result = _contracting_example(rng, n, g)
    family = rnn_family(w, g)
    step = max_rk2_step(family, result.metric).max_step
    assert step > 0
    check = rk2_contraction_factor(family, result.metric, 0.99 * step)
    assert check.holds
    # worst RK2 Jacobian over random pairs of vertices/interior points
    d1 = rng.uniform(0, g, (300, n))
    d2 = rng.uniform(0, g, (300, n))
    j1, j2 = family.jacobian(d1), family.jacobian(d2)
    h = 0.99 * step
    rk2 = np.eye(n) + h * j2 @ (np.eye(n) + 0.5 * h * j1)
    assert _metric_norm(result.metric, rk2).max() <= check.factor + 1e-12


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(0.3, 3.0), st.floats(0.05, 0.6))
def test_discrete_condition_matches_theorem5_for_discrete_rnn(seed, n, g, margin):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    theta = np.exp(rng.uniform(-1, 1, n))
    w = (u * rng.uniform(0, (1 - margin) / g, n)) * (theta[None, :] / theta[:, None])
    result = theorem5(w, g)
    assert result.holds
    check = discrete_map_factor(discrete_rnn_family(w, g), result.metric)
    assert check.exact and check.holds
    # J^T M J - M <= (factor^2 - 1) M at the vertex D = g I, which is g ||P^(1/2) W P^(-1/2)||
    assert check.factor == pytest.approx(g * result.details["scaled_norm"], rel=1e-6)
    assert check.rate_per_step > 0


def test_discrete_map_factor_detects_expansion():
    check = discrete_map_factor(discrete_rnn_family(1.5 * np.eye(3), 1.0), np.eye(3))
    assert not check.holds and check.factor == pytest.approx(1.5)


def test_no_step_when_the_metric_fails():
    family = rnn_family(3 * np.eye(2), 1.0)
    assert max_euler_step(family, np.eye(2)).max_step == 0
    assert max_euler_step(family, np.eye(2), max_vertices=1).max_step == 0
