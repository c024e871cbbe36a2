"""Every model of the registry passes the public conformance check, and the check can fail."""

import pytest
import torch
from torch import nn

from stablernn import LipschitzCell, LipschitzRNN
from stablernn.models.registry import MODELS, build_layer
from stablernn.testing import check_recurrent_layer

VARIANTS = {
    "lipschitz": [{}, {"method": "rk2"},
                  {"parametrization": "contracting", "method": "exponential"}],
    "antisymmetric": [{}], "ode-rnn": [{}], "lstm": [{}], "gru": [{}],
    "sparse-combo": [{"num_subnetworks": 4}, {"num_subnetworks": 4, "method": "splitting"},
                     {"num_subnetworks": 4, "method": "rk2"}],
    "svd-combo": [{"num_subnetworks": 4}, {"num_subnetworks": 4, "method": "splitting"}],
}


def test_every_registered_model_has_variants_here():
    assert set(VARIANTS) == set(MODELS)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("name, options", [(name, options) for name, variants in VARIANTS.items()
                                           for options in variants])
def test_registered_models_pass_the_conformance_check(name, options, batch_first):
    torch.manual_seed(0)
    layer = build_layer(name, 3, 16, batch_first=batch_first, **options)
    ran = check_recurrent_layer(layer)
    expected = {"layouts", "batch_first", "h0", "gradients", "float64", "certificate"}
    assert expected <= set(ran)
    assert ("cell" in ran) == hasattr(layer, "cell")


class _WrongLastState(LipschitzRNN):
    def forward(self, input, h0=None):
        output, last = super().forward(input, h0)
        return output, 2 * last


class _IgnoresH0(LipschitzRNN):
    def forward(self, input, h0=None):
        return super().forward(input, None)


class _UnusedParameter(LipschitzRNN):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unused = nn.Parameter(torch.zeros(2))


class _CellDisagrees(nn.Module):
    """A layer whose ``cell`` is not the one it runs."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.inner = LipschitzRNN(input_size, hidden_size)
        self.cell = LipschitzCell(input_size, hidden_size)
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, False

    def forward(self, input, h0=None):
        self.inner.batch_first = self.batch_first
        return self.inner(input, h0)


@pytest.mark.parametrize("broken, message", [
    (_WrongLastState, "h_n against the last output"),
    (_IgnoresH0, "two halves from the middle state"),
    (_UnusedParameter, "parameter unused: no finite gradient"),
    (_CellDisagrees, "the cell stepped by hand"),
])
def test_the_check_names_the_broken_convention(broken, message):
    with pytest.raises(AssertionError, match=message):
        check_recurrent_layer(broken(3, 8))
