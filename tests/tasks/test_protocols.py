"""The protocol options of the reference code: validation split, sCIFAR augmentation, PTB
state carrying (docs/tasks.md). Data files are written here in their standard formats."""

import json
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from mnist_files import TRAIN, write_mnist  # tests/ is on sys.path
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from stablernn.experiments.checkpoint import load_checkpoint
from stablernn.experiments.config import TrainConfig
from stablernn.experiments.evaluation import carried_state_outputs, evaluate
from stablernn.experiments.modeling import build_model
from stablernn.experiments.training import train
from stablernn.tasks import BatchDataset, get_batch, load_task, take
from stablernn.tasks.base import split_indices

# ---------------------------------------------------------------------------------------------
# validation split


def test_start_split_is_the_split_of_before():
    """Hard-coded: RandomState(1234).permutation(10) is [7, 2, 9, 1, 0, 8, 4, 5, 6, 3], and the
    split every earlier run used takes validation, then test, from its start."""
    assert np.random.RandomState(1234).permutation(10).tolist() == [7, 2, 9, 1, 0, 8, 4, 5, 6, 3]
    for split in (split_indices(10, 3, 2, 1234), split_indices(10, 3, 2, 1234, "start")):
        train_idx, val_idx, test_idx = (part.tolist() for part in split)
        assert val_idx == [7, 2, 9] and test_idx == [1, 0] and train_idx == [8, 4, 5, 6, 3]
    for count, validation, test, seed in ((60000, 2000, 0, 1234), (50, 7, 5, 3)):
        order = np.random.RandomState(seed).permutation(count)
        train_idx, val_idx, test_idx = split_indices(count, validation, test, seed)
        np.testing.assert_array_equal(val_idx, order[:validation])
        np.testing.assert_array_equal(test_idx, order[validation:validation + test])
        np.testing.assert_array_equal(train_idx, order[validation + test:])


def official_split(count: int, offset: int, seed: int = 1234):
    """The official Lipschitz RNN code (get_data.py): torch's random_split idiom on
    R = RandomState(1234).permutation(n), lengths (n - offset, offset), cumulative ends."""
    permutation = np.random.RandomState(seed).permutation(count)
    lengths = (count - offset, offset)
    ends = np.cumsum(lengths)
    return [permutation[end - length:end] for end, length in zip(ends, lengths)]


def test_end_split_holds_out_exactly_the_last_of_the_shuffle():
    train_idx, val_idx, test_idx = (p.tolist() for p in split_indices(10, 3, 2, 1234, "end"))
    assert (train_idx, test_idx, val_idx) == ([7, 2, 9, 1, 0], [8, 4], [5, 6, 3])
    for count, offset in ((60000, 2000), (50000, 2000), (57, 9)):
        train_idx, val_idx, test_idx = split_indices(count, offset, 0, 1234, "end")
        official_train, official_val = official_split(count, offset)
        np.testing.assert_array_equal(val_idx, official_val)
        np.testing.assert_array_equal(train_idx, official_train)
        assert len(test_idx) == 0
    with pytest.raises(ValueError, match="validation_from must be one of 'start', 'end'"):
        split_indices(10, 3, 0, 1234, "last")


def ids_of(inputs: torch.Tensor) -> np.ndarray:  # tests/mnist_files.py: pixels 0, 1 = the id
    pixels = torch.round(inputs[:, :2, 0] * 255).long().numpy()
    return pixels[:, 0] + 256 * pixels[:, 1]


def test_smnist_end_split_is_the_official_one_and_start_is_unchanged(tmp_path):
    write_mnist(tmp_path, gz=False)
    order = np.random.RandomState(1234).permutation(TRAIN)
    default = load_task("smnist", data_dir=tmp_path, validation=10)
    start = load_task("smnist", data_dir=tmp_path, validation=10, validation_from="start")
    end = load_task("smnist", data_dir=tmp_path, validation=10, validation_from="end")
    for task in (default, start):
        np.testing.assert_array_equal(ids_of(task.validation.tensors[0]), order[:10])
        np.testing.assert_array_equal(ids_of(task.train.tensors[0]), order[10:])
    np.testing.assert_array_equal(ids_of(end.validation.tensors[0]), order[TRAIN - 10:])
    np.testing.assert_array_equal(ids_of(end.train.tensors[0]), order[:TRAIN - 10])
    for split in (end.train, end.validation):  # labels stay with their images
        inputs, labels = split.tensors
        np.testing.assert_array_equal(ids_of(inputs) % 10, labels.numpy())
    assert torch.equal(end.test.tensors[0], start.test.tensors[0])
    # psmnist: the same images, permuted
    permuted = load_task("psmnist", data_dir=tmp_path, validation=10, validation_from="end")
    permutation = torch.tensor(permuted.info["permutation"])
    assert torch.equal(permuted.validation.tensors[0],
                       end.validation.tensors[0][:, permutation])


def test_bad_validation_from_is_refused_before_reading_files(tmp_path):
    for task in ("smnist", "scifar10", "noise-cifar10"):
        with pytest.raises(ValueError, match="validation_from"):
            load_task(task, data_dir=tmp_path / "absent", validation_from="middle")


def test_digits_end_split_takes_validation_then_test_from_the_end():
    from sklearn.datasets import load_digits

    pixels = torch.as_tensor(load_digits().data, dtype=torch.float32) / 16.0
    order = np.random.RandomState(1234).permutation(len(pixels))
    task = load_task("digits", validation_from="end")
    start = load_task("digits")
    count = len(pixels)
    for split, index in ((task.validation, order[count - 180:]),
                         (task.test, order[count - 360:count - 180]),
                         (task.train, order[:count - 360]),
                         (start.validation, order[:180]), (start.test, order[180:360]),
                         (start.train, order[360:])):
        assert torch.equal(split.tensors[0][:, :, 0], pixels[index])


# ---------------------------------------------------------------------------------------------
# CIFAR-10: split and augmentation

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PER_BATCH, CIFAR_TEST = 8, 6


def write_cifar(directory):
    """CIFAR-10 python batches: protocol-2 pickles of dicts with bytes keys; pixel 0 of the red
    channel is the image's id (0-39 training, 40-45 test), pixel 1 its label."""
    rng = np.random.default_rng(1)
    directory.mkdir(parents=True, exist_ok=True)
    next_id, arrays = 0, {}
    for name in CIFAR_FILES:
        count = CIFAR_TEST if name == "test_batch" else PER_BATCH
        data = rng.integers(1, 256, size=(count, 3072), dtype=np.uint8)  # no black pixel
        labels = [int(v) for v in rng.integers(0, 10, size=count)]
        data[:, 0] = np.arange(next_id, next_id + count)
        data[:, 1] = labels
        next_id += count
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(count)]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
        arrays[name] = (data, np.array(labels))
    train = np.concatenate([arrays[n][0] for n in CIFAR_FILES[:5]])
    return train, np.concatenate([arrays[n][1] for n in CIFAR_FILES[:5]])


def raw_ids(task, inputs):
    """Image ids from sequences (n, 1024, 3): red channel of pixel 0, denormalized."""
    mean, std = task.info["channel_mean"][0], task.info["channel_std"][0]
    return torch.round((inputs[:, 0, 0] * std + mean) * 255).long().numpy()


@pytest.mark.parametrize("name", ["scifar10", "noise-cifar10"])
def test_cifar_end_split(tmp_path, name):
    train_data, _ = write_cifar(tmp_path)
    order = np.random.RandomState(1234).permutation(len(train_data))
    start = load_task(name, data_dir=tmp_path, validation=10)
    end = load_task(name, data_dir=tmp_path, validation=10, validation_from="end")
    generator = torch.Generator().manual_seed(0)
    for task, val_index, train_index in ((start, order[:10], order[10:]),
                                         (end, order[-10:], order[:-10])):
        validation = get_batch(task.validation, torch.arange(10), generator).inputs
        training = get_batch(task.train, torch.arange(30), generator).inputs
        if name == "noise-cifar10":  # step 0 holds row 0 of the three channels
            validation, training = validation[:, :1, :1], training[:, :1, :1]
        np.testing.assert_array_equal(raw_ids(task, validation), val_index)
        np.testing.assert_array_equal(raw_ids(task, training), train_index)
    # statistics come from the training images the split keeps
    mean = train_data[order[:-10]].reshape(-1, 3, 1024).astype(np.float64).mean(axis=(0, 2))
    np.testing.assert_allclose(end.info["channel_mean"], mean / 255, rtol=1e-6)


def candidates(image: np.ndarray) -> list[tuple[tuple[int, int, bool], np.ndarray]]:
    """Every crop (after 4 black pixels of padding) and flip of one uint8 (3, 32, 32) image."""
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
    found = []
    for top in range(9):
        for left in range(9):
            window = padded[:, top:top + 32, left:left + 32]
            found.append(((top, left, False), window))
            found.append(((top, left, True), window[:, :, ::-1]))
    return found


def test_scifar10_augmentation_crops_and_flips_training_batches_only(tmp_path):
    train_data, train_labels = write_cifar(tmp_path)
    plain = load_task("scifar10", data_dir=tmp_path, validation=10)
    task = load_task("scifar10", data_dir=tmp_path, validation=10, augment=True)
    assert isinstance(task.train, BatchDataset) and len(task.train) == 30
    assert task.info["channel_mean"] == plain.info["channel_mean"]
    # validation and test: untouched (the same tensors as without augmentation)
    for split in ("validation", "test"):
        ours, theirs = getattr(task, split).tensors, getattr(plain, split).tensors
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    mean = torch.tensor(task.info["channel_mean"])
    std = torch.tensor(task.info["channel_std"])
    plain_inputs, plain_targets = plain.train.tensors
    images = train_data[np.random.RandomState(1234).permutation(40)[10:]].reshape(-1, 3, 32, 32)
    generator = torch.Generator().manual_seed(5)
    seen, changed = set(), 0
    for _ in range(6):
        state = generator.get_state()
        indices = torch.randperm(30)[:25]
        inputs, targets, mask = get_batch(task.train, indices, generator)
        assert mask is None and inputs.shape == (25, 1024, 3) and inputs.dtype == torch.float32
        assert torch.equal(targets, plain_targets[indices])  # labels kept
        # reproducible from the generator's state (what a resumed run restores)
        replay = torch.Generator()
        replay.set_state(state)
        assert torch.equal(get_batch(task.train, indices, replay).inputs, inputs)
        changed += int(not torch.equal(inputs, plain_inputs[indices]))
        # back to uint8 pixels (n, 3, 32, 32); black padding is the value 0
        raw = torch.round((inputs.transpose(1, 2) * std.view(1, 3, 1) + mean.view(1, 3, 1))
                          * 255).long().reshape(-1, 3, 32, 32).numpy()
        for row, index in enumerate(indices.tolist()):
            matches = [key for key, window in candidates(images[index])
                       if np.array_equal(window, raw[row])]
            assert len(matches) >= 1, "not a padded crop (and flip) of its image"
            top, left, _ = matches[0]
            seen.add(matches[0])
            # pixel values: the kept window's, plus zeros for the padding
            kept = images[index][:, max(top - 4, 0):top + 28, max(left - 4, 0):left + 28]
            padding = 3 * 1024 - kept.size
            assert Counter(raw[row].ravel().tolist()) == (
                Counter(kept.ravel().tolist()) + Counter({0: padding}))
            assert train_labels[np.random.RandomState(1234).permutation(40)[10:]][index] == \
                targets[row]
    assert changed == 6  # every batch differs from the unaugmented one
    tops = {key[0] for key in seen} | {key[1] for key in seen}
    assert {0, 8} <= tops and {True, False} == {key[2] for key in seen}
    # take() keeps the augmentation; evaluation splits are never a BatchDataset
    assert isinstance(take(task.train, 5), BatchDataset) and len(take(task.train, 5)) == 5
    assert isinstance(task.validation, TensorDataset)
    with pytest.raises(ValueError, match="augment must be true or false"):
        load_task("scifar10", data_dir=tmp_path / "absent", augment=1)


# ---------------------------------------------------------------------------------------------
# PTB: the state carried across windows

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ate", "fish", "ran"]


def write_corpus(directory, seed=0):
    """ptb.{train,valid,test}.txt: lines of words separated by spaces."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 30), ("valid", 12), ("test", 12)):
        text = "".join(" " + " ".join(rng.choice(WORDS, size=rng.integers(3, 8))) + " \n"
                       for _ in range(lines))
        (directory / f"ptb.{split}.txt").write_text(text)


def language_model(task, model="lipschitz", seed=0, hidden_size=12, embedding_size=6):
    config = TrainConfig(task="ptb-word", model=model, hidden_size=hidden_size,
                         embedding_size=embedding_size)
    torch.manual_seed(seed)
    return build_model(config.resolved(), task)


def manual_carried_loss(model, ids, streams, length, carry=True):
    """Mean cross-entropy per predicted token, the state carried (or reset) by hand."""
    columns = len(ids) // streams
    matrix = ids[:streams * columns].reshape(streams, columns)
    embedding, head = model[0], model[1]
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for start in range(0, columns - 1, length):
            end = min(start + length, columns - 1)
            inputs, targets = matrix[:, start:end], matrix[:, start + 1:end + 1]
            states, last = head.rnn(embedding(inputs), state)
            state = last if carry else None
            logits = head.readout(states)
            total += functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
    return total / count


def test_token_stream_windows_are_consecutive_parallel_streams(tmp_path):
    write_corpus(tmp_path)
    reset = load_task("ptb-word", data_dir=tmp_path, sequence_length=4)
    task = load_task("ptb-word", data_dir=tmp_path, sequence_length=4, carry_state=True,
                     eval_streams=3)
    assert task.info["carry_state"] and task.info["level"] == "word"
    assert task.validation.streams == task.test.streams == 3 and task.train.streams is None
    # without carrying, a TokenStream reads as the default protocol's windows
    for carried, plain in ((task.train, reset.train), (task.test, reset.test)):
        assert len(carried) == len(plain)
        batch = get_batch(carried, torch.arange(len(carried)))
        assert torch.equal(batch.inputs, plain.tensors[0])
        assert torch.equal(batch.targets, plain.tensors[1])
    ids = task.validation.ids
    columns = len(ids) // 3
    windows = list(task.validation.windows(3))
    assert len(windows) == task.validation.window_count(3) == -(-(columns - 1) // 4)
    inputs = torch.cat([w.inputs for w in windows], dim=1)
    targets = torch.cat([w.targets for w in windows], dim=1)
    assert inputs.shape == (3, columns - 1)
    for stream in range(3):  # stream b: tokens b L .. (b + 1) L - 1, each predicting the next
        tokens = ids[stream * columns:(stream + 1) * columns]
        assert torch.equal(inputs[stream], tokens[:-1])
        assert torch.equal(targets[stream], tokens[1:])
    assert all(w.inputs.shape[1] == 4 for w in windows[:-1]) and windows[-1].inputs.shape[1] <= 4
    # take() keeps a prefix of the stream; other subsets are refused
    assert torch.equal(take(task.train, 3).ids, task.train.ids[:13])
    with pytest.raises(ValueError, match="prefix"):
        task.train.subset(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="carry_state must be true or false"):
        load_task("ptb-word", data_dir=tmp_path, carry_state="yes")
    with pytest.raises(ValueError, match="parallel streams"):
        task.validation.window_count(len(ids))


@pytest.mark.parametrize("model", ["lipschitz", "lstm"])
def test_evaluation_carries_the_state_like_a_manual_loop(tmp_path, model):
    write_corpus(tmp_path)
    reset = load_task("ptb-word", data_dir=tmp_path, sequence_length=4)
    task = load_task("ptb-word", data_dir=tmp_path, sequence_length=4, carry_state=True,
                     eval_streams=2)
    net = language_model(task, model)
    carried = evaluate(net, task.validation, task.kind, 64, torch.device("cpu"))
    ids = task.validation.ids
    expected = manual_carried_loss(net, ids, 2, 4)
    assert carried["loss"] == pytest.approx(expected, rel=1e-5)
    # the state matters: resetting it at every window of the same streams gives another loss,
    # and so does the default protocol (independent windows)
    assert abs(manual_carried_loss(net, ids, 2, 4, carry=False) - expected) > 1e-4
    plain = evaluate(net, reset.validation, task.kind, 64, torch.device("cpu"))
    assert abs(plain["loss"] - carried["loss"]) > 1e-4


def test_training_windows_detach_the_carried_state(tmp_path):
    write_corpus(tmp_path)
    task = load_task("ptb-word", data_dir=tmp_path, sequence_length=4, carry_state=True)
    net = language_model(task)
    pairs = carried_state_outputs(net, task.train, 3, torch.device("cpu"))
    (first, _), (second, _) = next(pairs), next(pairs)
    weight = net[0].weight
    gradient = torch.autograd.grad(second.sum(), weight)[0]
    # by hand: window 2 from window 1's last state, detached, and without detaching
    matrix = task.train.stream_matrix(3)
    head = net[1]
    _, last = head.rnn(net[0](matrix[:, 0:4]))
    for detach, equal in ((True, True), (False, False)):
        start = last.detach() if detach else last
        states, _ = head.rnn(net[0](matrix[:, 4:8]), start)
        outputs = head.readout(states)
        assert torch.allclose(outputs, second, atol=1e-6)
        by_hand = torch.autograd.grad(outputs.sum(), weight, retain_graph=True)[0]
        assert torch.allclose(by_hand, gradient, atol=1e-6) == equal
    assert first.shape == (3, 4, task.output_size)


def test_train_runs_the_carried_protocol_end_to_end(tmp_path):
    write_corpus(tmp_path / "data")
    config = TrainConfig(task="ptb-word", model="lipschitz", hidden_size=8, embedding_size=4,
                         epochs=2, batch_size=3, device="cpu",
                         task_options={"data_dir": str(tmp_path / "data"), "sequence_length": 4,
                                       "carry_state": True, "eval_streams": 2})
    result = train(config, tmp_path / "run", progress=False, log=lambda message: None)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    task = load_task("ptb-word", **config.task_options)
    net = language_model(task, hidden_size=8, embedding_size=4)
    net.load_state_dict(load_checkpoint(tmp_path / "run" / "best.pt")["model_state"])
    ids = task.test.ids
    assert results["test_loss"] == pytest.approx(manual_carried_loss(net, ids, 2, 4), rel=1e-5)
    assert result.test["loss"] == results["test_loss"]
    assert isinstance(net, nn.Sequential)
