"""Calling conventions of torch.nn.RNN, and clear errors for bad input."""

import pytest
import torch
from torch import nn

from stablernn import ODERNN, AntisymmetricRNN, LipschitzCell, LipschitzRNN

LAYERS = [
    lambda **kw: LipschitzRNN(3, 5, **kw),
    lambda **kw: LipschitzRNN(3, 5, method="rk2", **kw),
    lambda **kw: AntisymmetricRNN(3, 5, **kw),
    lambda **kw: ODERNN(3, 5, **kw),
]


@pytest.mark.parametrize("make", LAYERS)
def test_shapes_match_torch_rnn_for_all_layouts(make):
    reference = nn.RNN(3, 5)
    layer = make()
    for shape in [(7, 2, 3), (7, 3)]:
        inputs = torch.randn(*shape)
        out, h_n = layer(inputs)
        ref_out, ref_h = reference(inputs)
        assert out.shape == ref_out.shape and h_n.shape == ref_h.shape
        torch.testing.assert_close(h_n.reshape(-1), out.reshape(7, -1)[-1].reshape(-1))
    first = make(batch_first=True)
    first.load_state_dict(layer.state_dict())
    reference_first = nn.RNN(3, 5, batch_first=True)
    inputs = torch.randn(2, 7, 3)
    out, h_n = first(inputs)
    ref_out, ref_h = reference_first(inputs)
    assert out.shape == ref_out.shape and h_n.shape == ref_h.shape
    # batch_first is only a layout: same numbers as time-major
    out_time_major, h_time_major = layer(inputs.transpose(0, 1))
    torch.testing.assert_close(out, out_time_major.transpose(0, 1))
    torch.testing.assert_close(h_n, h_time_major)


@pytest.mark.parametrize("make", LAYERS)
def test_unbatched_equals_batch_of_one_and_h0_continues_a_run(make):
    layer = make()
    inputs = torch.randn(10, 3)
    out, h_n = layer(inputs)
    out_b, h_b = layer(inputs.unsqueeze(1))
    torch.testing.assert_close(out, out_b[:, 0])
    torch.testing.assert_close(h_n, h_b[:, 0])
    # running in two halves from h_n equals running once
    first, h_mid = layer(inputs[:4])
    second, h_end = layer(inputs[4:], h_mid)
    torch.testing.assert_close(torch.cat([first, second]), out)
    torch.testing.assert_close(h_end, h_n)


@pytest.mark.parametrize(
    "inputs,h0,message",
    [
        (torch.randn(4, 2, 3, 1), None, "input must be 3-D"),
        (torch.randn(5), None, "input must be 3-D"),
        (torch.randn(4, 2, 7), None, "feature size 7, expected input_size=3"),
        (torch.randn(0, 2, 3), None, "no time steps"),
        (torch.randn(4, 2, 3), torch.zeros(2, 5), r"h0 must have shape \(1, 2, 5\)"),
        (torch.randn(4, 2, 3), torch.zeros(1, 1, 5), r"h0 must have shape \(1, 2, 5\)"),
        (torch.randn(4, 3), torch.zeros(1, 1, 5), r"h0 must have shape \(1, 5\)"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(inputs, h0, message):
    with pytest.raises(ValueError, match=message):
        LipschitzRNN(3, 5)(inputs, h0)


def test_nonfinite_input_raises_unless_allowed():
    inputs = torch.randn(4, 2, 3)
    inputs[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="input contains 1 NaN or Inf"):
        LipschitzRNN(3, 5)(inputs)
    out, _ = LipschitzRNN(3, 5, check_finite=False)(inputs)
    assert torch.isnan(out[1:, 0]).all() and torch.isfinite(out[:, 1]).all()
    inputs[1, 0, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        LipschitzRNN(3, 5)(inputs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"beta_a": 1.5}, r"beta must be a number in \[0, 1\], got 1.5"),
        ({"beta_w": -0.1}, "beta must be a number in"),
        ({"gamma_a": -1.0}, "gamma must be a finite number >= 0, got -1.0"),
        ({"step_size": 0.0}, "step_size must be a finite number > 0, got 0.0"),
        ({"step_size": -0.1}, "step_size must be"),
        ({"method": "rk4"}, "method must be one of 'euler', 'rk2', 'exponential', got 'rk4'"),
        ({"alpha": -1.0}, "alpha must be"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LipschitzRNN(3, 5, **kwargs)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1, got 0"):
        LipschitzRNN(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        LipschitzCell(-1, 4)


def test_cell_rejects_bad_state():
    cell = LipschitzCell(3, 5)
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 5\)"):
        cell(torch.randn(2, 3), torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="feature size 4"):
        cell(torch.randn(2, 4))


def test_constant_matrices_are_buffers_and_move_with_module():
    layer = LipschitzRNN(3, 5).double()
    names = {name for name, _ in layer.named_buffers()}
    assert "cell.param_a.identity" in names
    assert layer.cell.A.dtype == torch.float64
    trained = {name for name, _ in layer.named_parameters()}
    assert trained == {"cell.param_a.free", "cell.param_w.inner.free",
                       "cell.input_projection.weight", "cell.input_projection.bias"}
