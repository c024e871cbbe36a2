"""Noise hits its level; PGD stays in its ball and hurts; DeepFool flips labels with small
perturbations; bad arguments are named."""

import pytest
import torch

from stablernn import LipschitzRNN, SequenceClassifier
from stablernn.analysis import (
    accuracy,
    deepfool,
    noise_curve,
    pgd_linf,
    robust_accuracy,
    salt_and_pepper,
    white_noise,
)

MEANS = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])  # one per class


def sequences(count, generator):
    """Three classes of length-8 sequences: a constant class mean plus noise (std 0.5)."""
    targets = torch.randint(0, 3, (count,), generator=generator)
    inputs = MEANS[targets].unsqueeze(1) + 0.5 * torch.randn(count, 8, 2, generator=generator)
    return inputs, targets


@pytest.fixture(scope="module")
def trained():
    """A Lipschitz RNN classifier trained to high accuracy, and held-out data."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = SequenceClassifier(
        LipschitzRNN(2, 8, step_size=0.3, batch_first=True, engine="loop",
                     parametrization="paper"), 3)
    inputs, targets = sequences(512, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead, badly on a busy machine
    try:
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    test_inputs, test_targets = sequences(256, generator)
    assert accuracy(model, test_inputs, test_targets) > 0.95
    return model, test_inputs, test_targets


def test_white_noise_has_the_requested_std():
    inputs = torch.zeros(200, 50, 10)
    noise = white_noise(inputs, 0.3, generator=torch.Generator().manual_seed(0)) - inputs
    assert noise.std().item() == pytest.approx(0.3, rel=0.02)
    assert noise.mean().abs().item() < 0.01
    assert torch.equal(white_noise(inputs, 0.0), inputs)


def test_salt_and_pepper_flips_the_requested_fraction_to_the_extremes():
    inputs = torch.rand(200, 50, 10) * 0.8 + 0.1
    noisy = salt_and_pepper(inputs, 0.2, generator=torch.Generator().manual_seed(0))
    low, high = inputs.min(), inputs.max()
    changed = noisy != inputs
    assert changed.float().mean().item() == pytest.approx(0.2, rel=0.03)
    assert ((noisy == low) | (noisy == high))[changed].all()
    assert (noisy == low)[changed].float().mean().item() == pytest.approx(0.5, abs=0.02)
    explicit = salt_and_pepper(inputs, 1.0, low=-1.0, high=2.0)
    assert ((explicit == -1.0) | (explicit == 2.0)).all()
    assert torch.equal(salt_and_pepper(inputs, 0.0), inputs)


def test_noise_curves_fall_with_the_level(trained):
    model, inputs, targets = trained
    white = noise_curve(model, inputs, targets, "white", [0.0, 1.0, 3.0])
    assert white[0] == {"level": 0.0, "accuracy": accuracy(model, inputs, targets)}
    assert white[0]["accuracy"] > white[2]["accuracy"]
    salt = noise_curve(model, inputs, targets, "salt-and-pepper", [0.0, 0.9], seed=1)
    assert salt[0]["accuracy"] > salt[1]["accuracy"]
    assert noise_curve(model, inputs, targets, "white", [1.0]) == white[1:2]


def test_pgd_stays_in_its_ball_and_reduces_accuracy(trained):
    model, inputs, targets = trained
    epsilon = 0.5
    for random_start in (False, True):
        adversarial = pgd_linf(model, inputs, targets, epsilon, step_size=0.15, steps=7,
                               random_start=random_start,
                               generator=torch.Generator().manual_seed(0))
        assert ((adversarial >= inputs - epsilon) & (adversarial <= inputs + epsilon)).all()
        assert accuracy(model, adversarial, targets) < 0.5
    assert model.training  # the attack restores the mode it found
    result = robust_accuracy(model, inputs, targets, "pgd", epsilon=epsilon, step_size=0.15)
    assert result["accuracy"] < 0.5 < result["clean_accuracy"]
    assert result["max_perturbation"] <= epsilon * (1 + 1e-6) and result["attacked"] == 256
    paper = robust_accuracy(model, inputs, targets, "pgd", epsilon=0.05)  # 7 steps of 0.01
    assert result["accuracy"] <= paper["accuracy"] <= paper["clean_accuracy"]
    assert paper["max_perturbation"] <= 0.05 + 1e-6


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_is_exact_on_a_linear_binary_classifier(norm):
    # One step lands (1 + overshoot) times past the boundary w.x + c = 0 at the distance
    # |w.x + c| / ||w||_q, q the dual norm (DeepFool, eqs. 3 and 11).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)).double()
    inputs = torch.randn(50, 4, 3, dtype=torch.float64)
    adversarial = deepfool(model, inputs, norm=norm, steps=1)
    with torch.no_grad():
        logits = model(inputs)
        assert (model(adversarial).argmax(1) != logits.argmax(1)).all()
    w = (model[1].weight[1] - model[1].weight[0]).detach()
    margin = (logits[:, 1] - logits[:, 0]).abs() + 1e-4
    perturbation = (adversarial - inputs).flatten(1)
    if norm == "l2":
        expected = 1.02 * margin[:, None] * w / w.square().sum()
    else:
        expected = 1.02 * margin[:, None] * w.sign() / w.abs().sum()
    expected = expected * (logits[:, 1] - logits[:, 0]).sign().neg()[:, None]
    torch.testing.assert_close(perturbation, expected)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_flips_labels_with_small_perturbations(trained, norm):
    model, inputs, targets = trained
    result = robust_accuracy(model, inputs, targets, f"deepfool-{norm}")  # 7 iterations
    assert result["fooling_rate"] > 0.9 and result["accuracy"] < 0.1
    with torch.no_grad():
        predicted = model(inputs).argmax(1)
    for candidates in (None, 2):
        adversarial = deepfool(model, inputs, norm=norm, candidates=candidates)
        with torch.no_grad():
            assert (model(adversarial).argmax(1) != predicted).float().mean() > 0.9
    # Smaller than the way to the nearest input the model classifies differently.
    q = 2 if norm == "l2" else float("inf")
    distances = torch.cdist(inputs.flatten(1), inputs.flatten(1), p=q)
    distances[predicted[:, None] == predicted[None, :]] = float("inf")
    adversarial = deepfool(model, inputs, norm=norm, steps=50)
    lengths = (adversarial - inputs).flatten(1).norm(p=q, dim=1)
    assert (lengths / distances.min(1).values).mean() < 0.8


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_respects_its_clip(trained, norm):
    model, inputs, targets = trained
    epsilon = 0.2 if norm == "linf" else 0.5
    adversarial = deepfool(model, inputs, norm=norm, epsilon=epsilon)
    if norm == "linf":
        assert ((adversarial >= inputs - epsilon) & (adversarial <= inputs + epsilon)).all()
    else:
        assert ((adversarial - inputs).flatten(1).norm(dim=1) <= epsilon * (1 + 1e-5)).all()
    clipped = robust_accuracy(model, inputs, targets, f"deepfool-{norm}", epsilon=epsilon)
    free = robust_accuracy(model, inputs, targets, f"deepfool-{norm}")
    assert clipped["max_perturbation"] <= epsilon * (1 + 1e-5) < free["max_perturbation"]
    assert clipped["accuracy"] >= free["accuracy"]


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: white_noise(x, -0.1), "std"),
    (lambda m, x, y: salt_and_pepper(x, 1.5), "fraction"),
    (lambda m, x, y: salt_and_pepper(x, 0.1, low=1.0, high=0.0), "low must be <= high"),
    (lambda m, x, y: noise_curve(m, x, y, "pink", [0.1]), "kind"),
    (lambda m, x, y: pgd_linf(m, x, y, -0.1), "epsilon"),
    (lambda m, x, y: pgd_linf(m, x, y, 0.1, steps=0), "steps"),
    (lambda m, x, y: pgd_linf(m, x, y, 0.1, step_size=0.0), "step_size"),
    (lambda m, x, y: pgd_linf(m, x, y[:3], 0.1), "targets"),
    (lambda m, x, y: deepfool(m, x, norm="l1"), "norm"),
    (lambda m, x, y: deepfool(m, x, num_classes=10), "num_classes"),
    (lambda m, x, y: deepfool(m, x, candidates=1), "candidates"),
    (lambda m, x, y: deepfool(m, x, overshoot=-1.0), "overshoot"),
    (lambda m, x, y: deepfool(m, x, epsilon=-1.0), "epsilon"),
    (lambda m, x, y: robust_accuracy(m, x, y, "fgsm"), "attack"),
    (lambda m, x, y: robust_accuracy(m, x, y, "pgd"), "epsilon"),
    (lambda m, x, y: accuracy(m, x, y, batch_size=0), "batch_size"),
    (lambda m, x, y: accuracy(SequenceClassifier(LipschitzRNN(2, 4), 3), x, y), "batch_first"),
])
def test_bad_arguments_are_named(call, match):
    model = SequenceClassifier(LipschitzRNN(2, 4, batch_first=True, engine="loop"), 3)
    inputs, targets = sequences(4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        call(model, inputs, targets)
