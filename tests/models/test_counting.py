"""count_trained_parameters: the entries a model uses, as paper 000 counts them."""

import torch

from stablernn import LipschitzRNN, SparseComboNet, SVDComboNet
from stablernn.models import SequenceClassifier, count_trained_parameters


def test_feedback_counts_only_the_kept_blocks():
    """16 x 32 Sparse Combo Net (paper 000: 130K parameters): B counts its 120 lower blocks."""
    model = SequenceClassifier(SparseComboNet(1, 16, 32, seed=0), 10)
    everything = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_trained_parameters(model) == everything - 512 * 512 + 120 * 32 * 32
    assert 125_000 < count_trained_parameters(model) < 135_000


def test_entries_left_out_do_not_change_the_output():
    """What the count leaves out is unused: B's masked entries change nothing; a kept one does."""
    torch.manual_seed(0)
    net = SVDComboNet(2, 3, 4, feedback_init_std=0.5, feedback_density=0.5)
    inputs = torch.randn(6, 2, 2)
    before = net(inputs)[0]
    mask = net.assembly.feedback.mask.bool()
    with torch.no_grad():
        net.assembly.feedback.coupling[~mask] += 5.0
    torch.testing.assert_close(net(inputs)[0], before, rtol=0, atol=0)
    with torch.no_grad():
        net.assembly.feedback.coupling[mask.nonzero()[0].tolist()] += 5.0
    assert not torch.allclose(net(inputs)[0], before)
    feedback = net.assembly.feedback.coupling.numel()
    everything = sum(p.numel() for p in net.parameters())
    assert count_trained_parameters(net) == everything - feedback + int(mask.sum())


def test_models_without_masks_count_every_trained_entry():
    model = SequenceClassifier(LipschitzRNN(3, 16, parametrization="paper"), 4)
    model.readout.bias.requires_grad_(False)
    assert count_trained_parameters(model) == 2 * 16 * 16 + 3 * 16 + 16 + 16 * 4
