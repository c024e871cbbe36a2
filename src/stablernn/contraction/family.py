"""The set of Jacobians a model can have: ``J(d) = base + left diag(d) right``, d in a box.

Both papers' models have Jacobians of this form, with the activation slopes ``d`` as the only
state-dependent part:

- paper 000, eq. 1 (``tau x' = -x + W phi(x) + u``, slopes of phi in ``[0, g]``):
  ``J = -I + W D``: ``base = -I``, ``left = W``, ``right = I``, ``d in [0, g]^N``
  (:func:`rnn_family`);
- paper 002, eq. 1 with the scale alpha of eq. 12 (``h' = alpha A h + sigma(W h + U x + b)``,
  sigma L-Lipschitz): ``J = alpha A + D W``: ``base = alpha A``, ``left = I``, ``right = W``,
  ``d in [0, L]^N`` for a monotone sigma such as tanh (``[-L, L]`` otherwise)
  (:func:`lipschitz_family`);
- a discrete-time RNN ``x_{t+1} = W phi(x_t) + u`` (paper 000, section A.2 and the remark
  after Theorem 5): ``J = W D`` (:func:`discrete_rnn_family`).

The set of Jacobians along any pair of trajectories is contained in the family; for an
activation whose slope takes every value of ``[low, high]`` (ReLU reaches both ends, tanh
approaches them) the family is also the smallest such box, so a metric that fails at one
member fails for some input (paper 000, proof of Theorem 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stablernn._checks import check_non_negative, check_positive
from stablernn.contraction._inputs import as_matrix


@dataclass(frozen=True)
class JacobianFamily:
    """``{base + left @ diag(d) @ right : d in [low, high]^K}``.

    Attributes:
        base: (N, N) constant part.
        left: (N, K).
        right: (K, N).
        low, high: the slope range (``low <= high``).
        description: where the family comes from (equation of the paper).
    """

    base: np.ndarray
    left: np.ndarray
    right: np.ndarray
    low: float
    high: float
    description: str = ""

    def __post_init__(self) -> None:
        n = self.base.shape[0]
        if self.base.shape != (n, n):
            raise ValueError(f"base must be square, got shape {self.base.shape}")
        k = self.left.shape[1]
        if self.left.shape != (n, k) or self.right.shape != (k, n):
            raise ValueError(
                f"left must be (N, K) and right (K, N) with N = {n}, got {self.left.shape} and "
                f"{self.right.shape}"
            )
        if not self.low <= self.high:
            raise ValueError(f"the slope range must have low <= high, got [{self.low}, {self.high}]")

    @property
    def size(self) -> int:
        """N, the state dimension."""
        return self.base.shape[0]

    @property
    def slopes(self) -> int:
        """K, the number of independent slopes."""
        return self.left.shape[1]

    def jacobian(self, slopes: np.ndarray) -> np.ndarray:
        """``J(d)`` for slopes ``d`` of shape (K,) or a batch (B, K) -> (B, N, N)."""
        d = np.asarray(slopes, dtype=float)
        if d.ndim == 1:
            return self.base + (self.left * d) @ self.right
        return self.base + np.einsum("ik,bk,kj->bij", self.left, d, self.right)

    def midpoint(self) -> np.ndarray:
        return self.jacobian(np.full(self.slopes, 0.5 * (self.low + self.high)))


def rnn_family(weight, slope_bound: float = 1.0) -> JacobianFamily:
    """Paper 000, eq. 1 with tau = 1: ``J = -I + W D``, ``D = diag(phi')``, ``phi' in [0, g]``."""
    w = as_matrix("W", weight)
    g = check_positive("g", slope_bound)
    n = w.shape[0]
    return JacobianFamily(
        base=-np.eye(n), left=w, right=np.eye(n), low=0.0, high=g,
        description="paper 000, eq. 1: J = -I + W D, D = diag(phi'), phi' in [0, g]",
    )


def lipschitz_family(
    a, weight, lipschitz: float = 1.0, alpha: float = 1.0, monotone: bool = True
) -> JacobianFamily:
    """Paper 002, eq. 1 (with eq. 12's alpha): ``J = alpha A + D W``, ``D = diag(sigma')``.

    ``sigma' in [0, L]`` for a monotone sigma (tanh: L = 1), ``[-L, L]`` otherwise.
    """
    a = as_matrix("A", a)
    w = as_matrix("W", weight)
    if a.shape != w.shape:
        raise ValueError(f"W must have the shape of A {a.shape}, got {w.shape}")
    lip = check_positive("lipschitz", lipschitz)
    alpha = check_non_negative("alpha", alpha)
    n = a.shape[0]
    return JacobianFamily(
        base=alpha * a, left=np.eye(n), right=w, low=0.0 if monotone else -lip, high=lip,
        description=(
            "paper 002, eq. 1: J = alpha A + D W, D = diag(sigma'), sigma' in "
            + ("[0, L]" if monotone else "[-L, L]")
        ),
    )


def discrete_rnn_family(weight, slope_bound: float = 1.0) -> JacobianFamily:
    """Discrete-time RNN ``x_{t+1} = W phi(x_t) + u``: ``J = W D``, ``phi' in [0, g]``."""
    w = as_matrix("W", weight)
    g = check_positive("g", slope_bound)
    n = w.shape[0]
    return JacobianFamily(
        base=np.zeros((n, n)), left=w, right=np.eye(n), low=0.0, high=g,
        description="discrete-time RNN x_{t+1} = W phi(x_t) + u: J = W D, phi' in [0, g]",
    )
