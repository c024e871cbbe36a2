"""stablernn._checks: the one vocabulary of argument checks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stablernn._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_positive_int,
)


@given(value=st.floats(allow_nan=True, allow_infinity=True), low=st.floats(-10, 10),
       width=st.floats(0, 10), open_low=st.booleans(), open_high=st.booleans())
def test_check_number_accepts_exactly_the_finite_numbers_within_bounds(value, low, width,
                                                                        open_low, open_high):
    high = low + width
    inside = math.isfinite(value) and (value > low if open_low else value >= low) and \
        (value < high if open_high else value <= high)
    if inside:
        assert check_number("x", value, low, high, open_low=open_low,
                            open_high=open_high) == value
    else:
        with pytest.raises(ValueError, match=r"^x must be a number in [\[(]"):
            check_number("x", value, low, high, open_low=open_low, open_high=open_high)


@pytest.mark.parametrize("value, expected", [(np.float32(0.5), 0.5), (np.int64(2), 2.0),
                                             (torch.tensor(0.5), 0.5), (np.array([3.0]), 3.0)])
def test_numbers_of_numpy_and_torch_are_numbers(value, expected):
    assert check_positive("step_size", value) == expected


@pytest.mark.parametrize("value", [True, np.bool_(True), "1", None, [1.0], torch.ones(2),
                                   float("nan"), 0, -1e-300])
def test_check_positive_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=r"^step_size must be a finite number > 0, got "):
        check_positive("step_size", value)


def test_integer_choice_and_flag_checks():
    assert check_int("seed", np.int64(0), 0) == 0
    assert check_positive_int("size", 3) == 3
    for bad in (0, 1.0, True, "2"):
        with pytest.raises(ValueError, match=r"^size must be an integer >= 1, got "):
            check_positive_int("size", bad)
    with pytest.raises(ValueError, match=r"^mask must be one of 'lower', 'full', got True"):
        check_choice("mask", True, ("lower", "full"))
    with pytest.raises(ValueError, match=r"^task option augment must be true or false, got 1"):
        check_bool("task option augment", 1)
