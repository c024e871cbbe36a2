"""Several pixels per step (paper 002 section 7 reads MNIST as 98 steps of 8 pixels)."""

import pytest
import torch

from stablernn.tasks import load_task


@pytest.mark.parametrize("name", ["digits", "pdigits"])
def test_pixels_per_step_regroups_the_same_pixel_order(name):
    one = load_task(name)
    eight = load_task(name, pixels_per_step=8)
    assert (eight.sequence_length, eight.input_size) == (8, 8)
    inputs_one, targets_one = one.train.tensors
    inputs_eight, targets_eight = eight.train.tensors
    assert torch.equal(targets_one, targets_eight)
    assert torch.equal(inputs_eight.reshape(len(inputs_eight), -1), inputs_one.squeeze(-1))


def test_pixels_per_step_must_divide_the_image():
    with pytest.raises(ValueError, match="pixels_per_step must divide the 64 pixels"):
        load_task("digits", pixels_per_step=5)
    with pytest.raises(ValueError, match="pixels_per_step must be an integer >= 1"):
        load_task("digits", pixels_per_step=0)
