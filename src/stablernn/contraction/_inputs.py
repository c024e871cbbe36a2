"""Argument checks and conversions for the contraction toolkit.

Every function of :mod:`stablernn.contraction` accepts torch tensors, numpy arrays or nested
lists and works in float64 numpy. A bad argument raises one ``ValueError`` that names the
argument, says what was given and what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor, array or nested list (no checks)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().to("cpu").double().numpy()
    return np.array(value, dtype=float, copy=True)


def as_matrix(name: str, value: Any, *, square: bool = True) -> np.ndarray:
    """``value`` as a finite float64 matrix; ``ValueError`` naming ``name`` otherwise."""
    try:
        array = to_numpy(value)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be a real matrix (torch tensor, numpy array or nested list), "
            f"got {type(value).__name__}: {error}"
        ) from None
    if array.ndim != 2 or array.size == 0 or (square and array.shape[0] != array.shape[1]):
        expected = "a square matrix of shape (N, N) with N >= 1" if square else "a 2-d matrix"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} contains {bad} NaN or Inf value(s); expected a finite matrix")
    return array


def as_vector(name: str, value: Any, size: int | None = None) -> np.ndarray:
    """``value`` as a finite float64 vector (of length ``size`` when given)."""
    try:
        array = to_numpy(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a real vector, got {type(value).__name__}: {error}") from None
    if array.ndim != 1 or (size is not None and array.shape[0] != size):
        expected = f"a vector of length {size}" if size is not None else "a 1-d vector"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf value(s); expected finite values")
    return array


def check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}, got {tuple(b.shape)}"
        )


def check_metric(name: str, metric: Any, size: int) -> np.ndarray:
    """A symmetric positive definite ``size x size`` metric (symmetrized), or ``ValueError``."""
    matrix = as_matrix(name, metric)
    if matrix.shape[0] != size:
        raise ValueError(f"{name} must have shape ({size}, {size}), got {tuple(matrix.shape)}")
    scale = float(np.abs(matrix).max()) or 1.0
    if np.abs(matrix - matrix.T).max() > 1e-8 * scale:
        raise ValueError(f"{name} must be symmetric, got asymmetry {np.abs(matrix - matrix.T).max():.3g}")
    matrix = 0.5 * (matrix + matrix.T)
    smallest = float(np.linalg.eigvalsh(matrix).min())
    if not smallest > 0:
        raise ValueError(
            f"{name} must be positive definite, got smallest eigenvalue {smallest:.3g}"
        )
    return matrix


def sym(matrix: np.ndarray) -> np.ndarray:
    """Symmetric part ``(X + X^T) / 2``."""
    return 0.5 * (matrix + matrix.swapaxes(-1, -2))


def lambda_max(matrix: np.ndarray) -> float:
    """Largest eigenvalue of the symmetric part."""
    return float(np.linalg.eigvalsh(sym(matrix)).max())


def rounding(*scales: float) -> float:
    """A floor for rounding error in eigenvalues of matrices of the given norms."""
    return 256 * np.finfo(float).eps * max([1.0, *[abs(s) for s in scales]])
