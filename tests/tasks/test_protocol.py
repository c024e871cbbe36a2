"""The registry, the batch protocol every split follows, and the scoring of each kind."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from stablernn.tasks import (
    KINDS,
    TASKS,
    SequenceTask,
    check_task_options,
    correct,
    get_batch,
    iterate_batches,
    load_task,
    loss_sum,
    mean_loss,
    take,
    task_options,
)
from stablernn.tasks.datasets import NextFrameDataset, NoisePaddedDataset


def test_every_task_is_registered_with_its_options():
    expected = {"digits", "pdigits", "mnist5k", "pmnist5k", "smnist", "psmnist", "scifar10",
                "noise-cifar10", "adding", "copy", "ptb-char", "ptb-word", "timit"}
    assert set(TASKS) == expected
    assert task_options("smnist") == {"data_dir": None, "validation": 2000, "split_seed": 1234,
                                      "permutation_seed": 12008, "validation_from": "start",
                                      "pixels_per_step": 1}
    assert "char_tokens" in task_options("ptb-char") and "char_tokens" not in task_options(
        "ptb-word")
    assert task_options("noise-cifar10")["length"] == 1000
    for name in expected - {"digits", "pdigits", "mnist5k", "pmnist5k", "adding", "copy"}:
        assert "data_dir" in task_options(name)


def test_unknown_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="task 'adding' has no option.*lenght.*length"):
        check_task_options("adding", {"lenght": 5})
    with pytest.raises(ValueError, match="no option.*permuted"):
        load_task("smnist", permuted=True)
    with pytest.raises(ValueError, match="task must be one of"):
        task_options("imagenet")


def test_get_batch_and_take_on_tensor_datasets_are_plain_indexing():
    x, y = torch.randn(10, 4, 2), torch.arange(10)
    dataset = TensorDataset(x, y)
    index = torch.tensor([3, 1, 7])
    batch = get_batch(dataset, index)
    assert torch.equal(batch.inputs, x[index]) and torch.equal(batch.targets, y[index])
    assert batch.mask is None
    _, targets, mask = get_batch(dataset, slice(2, 5))
    assert torch.equal(targets, y[2:5]) and mask is None
    assert take(dataset, None) is dataset and len(take(dataset, 4)) == 4
    assert [len(b.targets) for b in iterate_batches(dataset, 4)] == [4, 4, 2]


def test_batch_datasets_take_and_iterate():
    noisy = NoisePaddedDataset(torch.randn(5, 2, 3), torch.arange(5), length=6, noise_seed=0)
    assert len(take(noisy, 2)) == 2
    batches = list(iterate_batches(noisy, 2))
    assert [b.inputs.shape for b in batches] == [(2, 6, 3), (2, 6, 3), (1, 6, 3)]
    torch.testing.assert_close(torch.cat([b.inputs for b in batches]),
                               get_batch(noisy, torch.arange(5)).inputs)
    sequences = NextFrameDataset([torch.randn(n, 3) for n in (4, 2, 6)])
    assert sequences.lengths.tolist() == [3, 1, 5]
    batch = NextFrameDataset.collate([sequences[0], sequences[1]])
    assert batch.inputs.shape == (2, 3, 3) and batch.mask.sum().item() == 4


def test_scoring_of_each_kind():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    total, units = loss_sum("classification", logits, labels)
    assert units == 4
    torch.testing.assert_close(total / 4, torch.nn.functional.cross_entropy(logits, labels))
    assert correct("classification", logits, labels) == (
        int((logits.argmax(1) == labels).sum()), 4)
    out, target = torch.randn(4, 1), torch.randn(4, 1)
    torch.testing.assert_close(mean_loss("regression", out, target), ((out - target) ** 2).mean())
    with pytest.raises(ValueError, match="accuracy"):
        correct("regression", out, target)
    step_logits, step_labels = torch.randn(2, 6, 9), torch.randint(0, 9, (2, 6))
    total, units = loss_sum("sequence-classification", step_logits, step_labels)
    assert units == 12
    torch.testing.assert_close(
        total / units,
        torch.nn.functional.cross_entropy(step_logits.reshape(12, 9), step_labels.reshape(12)))
    with pytest.raises(ValueError, match="one output per step"):
        loss_sum("language-model", logits, labels)
    # masked per-step regression: padded steps do not count; the mean is over elements
    out, target = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    total, units = loss_sum("sequence-regression", out, target, mask)
    assert units == 16
    torch.testing.assert_close(total, ((out - target) ** 2)[mask].sum())
    target[1, 1:] = 1e6  # padding values change nothing
    torch.testing.assert_close(loss_sum("sequence-regression", out, target, mask)[0], total)
    # a uniform language model scores log(V) nats per token
    uniform = torch.zeros(3, 5, 50)
    tokens = torch.randint(0, 50, (3, 5))
    assert mean_loss("language-model", uniform, tokens).item() == pytest.approx(math.log(50))


def test_sequence_task_kinds():
    dataset = TensorDataset(torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="task kind must be one of"):
        SequenceTask("x", dataset, dataset, dataset, 1, 2, 3, kind="ranking")
    assert set(KINDS) == {"classification", "regression", "sequence-classification",
                          "sequence-regression", "language-model"}
    task = SequenceTask("x", dataset, dataset, dataset, 1, 2, 3)
    assert not task.per_step and task.info == {} and "classification" in task.summary()
