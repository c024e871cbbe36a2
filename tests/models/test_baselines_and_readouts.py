"""Baselines follow their update equations; readouts work on every layer, torch's included."""

import pytest
import torch

from stablernn import GRU, LSTM, ODERNN, AntisymmetricRNN, PerStepReadout, SequenceClassifier
from stablernn.models import build_layer


def test_antisymmetric_update_equation():
    layer = AntisymmetricRNN(2, 4, step_size=0.2, gamma=0.3).double()
    inputs = torch.randn(6, 3, 2, dtype=torch.float64)
    output, _ = layer(inputs)
    M = layer.cell.param_w.free.detach()
    U, b = layer.cell.input_projection.weight.detach(), layer.cell.input_projection.bias.detach()
    recurrent = M - M.T - 0.3 * torch.eye(4, dtype=torch.float64)
    h = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(6):
        h = h + 0.2 * torch.tanh(h @ recurrent.T + inputs[t] @ U.T + b)
        torch.testing.assert_close(output[t], h)


def test_ode_rnn_update_equation():
    layer = ODERNN(2, 4, step_size=0.5).double()
    inputs = torch.randn(6, 3, 2, dtype=torch.float64)
    output, _ = layer(inputs)
    W = layer.cell.weight.detach()
    U, b = layer.cell.input_projection.weight.detach(), layer.cell.input_projection.bias.detach()
    h = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(6):
        h = h + 0.5 * torch.tanh(h @ W.T + inputs[t] @ U.T + b)
        torch.testing.assert_close(output[t], h)


@pytest.mark.parametrize("name", ["lipschitz", "antisymmetric", "ode-rnn", "lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_sequence_classifier_reads_last_state(name, batch_first):
    layer = build_layer(name, 3, 8, batch_first=batch_first)
    classifier = SequenceClassifier(layer, 4)
    inputs = torch.randn(2, 9, 3) if batch_first else torch.randn(9, 2, 3)
    logits = classifier(inputs)
    output, _ = layer(inputs)
    last = output[:, -1] if batch_first else output[-1]
    torch.testing.assert_close(logits, classifier.readout(last))
    unbatched = inputs[0] if batch_first else inputs[:, 0]
    torch.testing.assert_close(classifier(unbatched), logits[0], rtol=1e-5, atol=1e-6)


def test_per_step_readout_matches_layout():
    layer = LSTM(3, 8)
    readout = PerStepReadout(layer, 2)
    inputs = torch.randn(9, 2, 3)
    y = readout(inputs)
    torch.testing.assert_close(y, readout.readout(layer(inputs)[0]))
    assert GRU is torch.nn.GRU


def test_unknown_model_and_bad_option():
    with pytest.raises(ValueError, match="model must be one of"):
        build_layer("transformer", 1, 4)
    with pytest.raises(ValueError, match="bad option for model 'lstm'"):
        build_layer("lstm", 1, 4, step_size=0.1)
