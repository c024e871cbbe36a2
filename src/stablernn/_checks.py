"""Argument checks for the whole package: one clear ``ValueError`` per bad argument.

Each message names the argument, what was given and what was expected. Numbers may be Python or
numpy scalars or one-element tensors (never booleans). No torch import: the maths of
:mod:`stablernn.contraction` uses these checks on numpy arrays too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _as_number(name: str, value: Any, expected: str) -> float:
    if hasattr(value, "detach") or isinstance(value, np.ndarray):  # a tensor or an array
        size = value.size if isinstance(value, np.ndarray) else value.numel()
        if size != 1:
            raise ValueError(f"{name} must be {expected}, got an array of shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 *, open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a finite float within the bounds given (closed unless ``open_*``)."""
    if low is not None and high is not None:
        expected = (f"a number in {'(' if open_low else '['}{low:g}, "
                    f"{high:g}{')' if open_high else ']'}")
    elif low is not None:
        expected = f"a finite number {'>' if open_low else '>='} {low:g}"
    elif high is not None:
        expected = f"a finite number {'<' if open_high else '<='} {high:g}"
    else:
        expected = "a finite number"
    number = _as_number(name, value, expected)
    if (not math.isfinite(number)
            or (low is not None and (number <= low if open_low else number < low))
            or (high is not None and (number >= high if open_high else number > high))):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_positive(name: str, value: Any) -> float:
    return check_number(name, value, 0, open_low=True)


def check_non_negative(name: str, value: Any) -> float:
    return check_number(name, value, 0)


def check_in_range(name: str, value: Any, low: float, high: float) -> float:
    return check_number(name, value, low, high)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (Python or numpy integers, never booleans)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    return check_int(name, value, 1)


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")  # noqa: TRY004
    return value


def check_finite(name: str, tensor: Any) -> None:
    """A tensor without NaN or Inf (the layers' ``check_finite`` option)."""
    finite = tensor.isfinite()
    if not finite.all():
        bad = int((~finite).sum().item())
        raise ValueError(
            f"{name} contains {bad} NaN or Inf value(s); expected finite values "
            "(pass check_finite=False to the layer to allow them)"
        )
