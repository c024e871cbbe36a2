"""The generated adding and copy tasks follow their documented definitions."""

import math

import pytest
import torch

from stablernn.tasks import load_task


def test_adding_problem_definition():
    task = load_task("adding", length=50, train_samples=200, validation_samples=20,
                     test_samples=30, seed=3)
    assert task.kind == "regression" and not task.per_step
    assert (task.input_size, task.output_size, task.sequence_length) == (2, 1, 50)
    assert (len(task.train), len(task.validation), len(task.test)) == (200, 20, 30)
    x, y = task.train.tensors
    assert x.shape == (200, 50, 2) and y.shape == (200, 1) and y.dtype == torch.float32
    values, markers = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert torch.equal(markers.sum(dim=1), torch.full((200,), 2.0))
    assert torch.equal(markers[:, :25].sum(dim=1), torch.ones(200))  # one in each half
    torch.testing.assert_close(y[:, 0], (values * markers).sum(dim=1))
    assert task.info["baseline_loss"] == pytest.approx(1 / 6)
    # the baseline: predicting 1 gives MSE close to 1/6
    assert ((y - 1) ** 2).mean().item() == pytest.approx(1 / 6, abs=0.04)


def test_generated_splits_are_seeded_and_independent():
    a = load_task("adding", length=20, train_samples=50, seed=1)
    b = load_task("adding", length=20, train_samples=50, seed=1)
    c = load_task("adding", length=20, train_samples=80, seed=1)
    d = load_task("adding", length=20, train_samples=50, seed=2)
    torch.testing.assert_close(a.train.tensors[0], b.train.tensors[0])
    torch.testing.assert_close(a.test.tensors[0], c.test.tensors[0])  # train size: test same
    assert not torch.equal(a.train.tensors[0], d.train.tensors[0])
    assert not torch.equal(a.train.tensors[0][:20], a.validation.tensors[0][:20])


def test_copy_task_definition():
    delay, symbols, k = 30, 8, 10
    task = load_task("copy", delay=delay, train_samples=64, validation_samples=8,
                     test_samples=8, seed=0)
    steps = delay + 2 * k
    assert task.kind == "sequence-classification" and task.per_step
    assert (task.input_size, task.output_size, task.sequence_length) == (10, 9, steps)
    x, y = task.train.tensors
    assert x.shape == (64, steps, 10) and y.shape == (64, steps) and y.dtype == torch.long
    assert torch.equal(x.sum(dim=-1), torch.ones(64, steps))  # one-hot
    codes = x.argmax(dim=-1)
    data = codes[:, :k]
    assert data.min() >= 1 and data.max() <= symbols
    assert torch.equal(codes[:, k:k + delay - 1], torch.zeros(64, delay - 1, dtype=torch.long))
    assert torch.equal(codes[:, k + delay - 1], torch.full((64,), symbols + 1))  # delimiter
    assert torch.equal(codes[:, k + delay:], torch.zeros(64, k, dtype=torch.long))
    assert torch.equal(y[:, :k + delay], torch.zeros(64, k + delay, dtype=torch.long))
    assert torch.equal(y[:, k + delay:], data)  # recall after the delimiter
    assert task.info["baseline_loss"] == pytest.approx(k * math.log(symbols) / steps)


@pytest.mark.parametrize("options", [{"delay": 0}, {"train_samples": -1}, {"symbols": 1.5}])
def test_bad_options_name_the_option(options):
    name = next(iter(options))
    with pytest.raises(ValueError, match=f"task option {name} must be an integer"):
        load_task("copy", **options)
