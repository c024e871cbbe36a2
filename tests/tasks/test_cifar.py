"""scifar10 / noise-cifar10 from CIFAR-10 python batches written here in the standard format."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from stablernn.tasks import (
    BatchDataset,
    DataFormatError,
    MissingDataError,
    get_batch,
    load_task,
    take,
)
from stablernn.tasks.base import split_indices

PER_BATCH, TEST = 8, 6  # 40 training images, 6 test images
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def batch_bytes(data: np.ndarray, labels: list[int], name: str) -> bytes:
    """The layout of CIFAR-10's python batches: a protocol-2 pickle of a dict, bytes keys."""
    batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
             b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
    return pickle.dumps(batch, protocol=2)


def make_batches(seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    batches = {}
    for index, name in enumerate(FILES):
        count = TEST if name == "test_batch" else PER_BATCH
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=count)]
        data[:, 0] = np.array(labels) + 10 * index  # red pixel 0 encodes the label
        batches[name] = (data, labels)
    return batches


def write_cifar(directory, batches=None):
    batches = batches or make_batches()
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        (directory / name).write_bytes(batch_bytes(data, labels, name))
    return batches


def expected_splits(batches, validation):
    data = np.concatenate([batches[n][0] for n in FILES[:5]])
    labels = np.concatenate([batches[n][1] for n in FILES[:5]])
    train_idx, val_idx, _ = split_indices(len(data), validation, 0, 1234)
    pixels = data[train_idx].astype(np.float64).reshape(-1, 3, 1024) / 255
    mean, std = pixels.mean(axis=(0, 2)), pixels.std(axis=(0, 2))
    return {"train": (data[train_idx], labels[train_idx]),
            "validation": (data[val_idx], labels[val_idx]),
            "test": batches["test_batch"][0], "test_labels": np.array(batches["test_batch"][1]),
            "mean": mean, "std": std}


def test_scifar10_step_t_is_the_rgb_triple_of_pixel_t(tmp_path):
    batches = write_cifar(tmp_path)
    task = load_task("scifar10", data_dir=tmp_path, validation=10)
    assert (len(task.train), len(task.validation), len(task.test)) == (30, 10, TEST)
    assert (task.sequence_length, task.input_size, task.output_size) == (1024, 3, 10)
    expected = expected_splits(batches, 10)
    np.testing.assert_allclose(task.info["channel_mean"], expected["mean"], rtol=1e-5)
    np.testing.assert_allclose(task.info["channel_std"], expected["std"], rtol=1e-5)
    x, y = task.train.tensors
    assert x.shape == (30, 1024, 3) and x.dtype == torch.float32
    raw, labels = expected["train"]
    mean, std = expected["mean"], expected["std"]
    for t in (0, 1, 31, 32, 500, 1023):  # x[n, t, c] = channel c of pixel t
        for c in range(3):
            want = (raw[:, c * 1024 + t] / 255 - mean[c]) / std[c]
            np.testing.assert_allclose(x[:, t, c].numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(y.numpy(), labels)
    # normalized with the training statistics: per channel mean 0, std 1 on training data
    np.testing.assert_allclose(x.mean(dim=(0, 1)).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(dim=(0, 1), unbiased=False).numpy(), 1, atol=1e-4)
    # labels aligned in every split (the red pixel 0 encodes label + 10 * file index)
    for split in (task.train, task.validation, task.test):
        inputs, targets = split.tensors
        red0 = torch.round((inputs[:, 0, 0] * std[0] + mean[0]) * 255).long()
        assert torch.equal(red0 % 10, targets)
    test_x = task.test.tensors[0]
    want = (expected["test"][:, 1024 + 5] / 255 - mean[1]) / std[1]  # green of pixel 5
    np.testing.assert_allclose(test_x[:, 5, 1].numpy(), want, rtol=1e-4, atol=1e-5)


def test_noise_cifar10_rows_then_fresh_noise(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")  # torchvision's layout
    task = load_task("noise-cifar10", data_dir=tmp_path, validation=10, length=100)
    assert (task.sequence_length, task.input_size, task.output_size) == (100, 96, 10)
    assert isinstance(task.train, BatchDataset) and len(task.train) == 30
    with pytest.raises(TypeError, match="get_batch"):
        task.train.tensors  # noqa: B018
    expected = expected_splits(batches, 10)
    mean, std = expected["mean"], expected["std"]
    generator = torch.Generator().manual_seed(0)
    batch = get_batch(task.train, torch.arange(30), generator)
    assert batch.inputs.shape == (30, 100, 96) and batch.mask is None
    raw, labels = expected["train"]
    images = (raw.reshape(-1, 3, 32, 32) / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    for t in (0, 7, 31):  # step t < 32: row t of R, then of G, then of B
        want = np.concatenate([images[:, c, t, :] for c in range(3)], axis=1)
        np.testing.assert_allclose(batch.inputs[:, t].numpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(batch.targets.numpy(), labels)
    noise = batch.inputs[:, 32:]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    assert not torch.equal(noise[0], noise[1])  # different between samples
    again = get_batch(task.train, torch.arange(30), generator).inputs
    torch.testing.assert_close(again[:, :32], batch.inputs[:, :32])
    assert not torch.equal(again[:, 32:], noise)  # and between draws (epochs)
    # a generator with the same state draws the same noise (resume), however the batch is cut
    replay = torch.Generator().manual_seed(0)
    halves = [get_batch(task.train, torch.arange(0, 15), replay).inputs,
              get_batch(task.train, torch.arange(15, 30), replay).inputs]
    torch.testing.assert_close(torch.cat(halves), batch.inputs)
    # one sample for DataLoader users
    x0, y0 = task.train[3]
    assert x0.shape == (100, 96) and y0 == labels[3]


def test_noise_cifar10_evaluation_noise_is_fixed_per_sample(tmp_path):
    write_cifar(tmp_path)
    task = load_task("noise-cifar10", data_dir=tmp_path, validation=10, length=64,
                     noise_seed=3)
    first = get_batch(task.test, torch.arange(TEST)).inputs
    second = get_batch(task.test, torch.tensor([4, 2])).inputs
    torch.testing.assert_close(second, first[[4, 2]])  # independent of the batch
    assert not torch.equal(first[0, 32:], first[1, 32:])
    seed = np.random.SeedSequence([4, 2]).generate_state(1)[0]  # test: noise_seed + 1
    g = torch.Generator().manual_seed(int(seed))
    torch.testing.assert_close(first[2, 32:], torch.empty(32, 96).normal_(0, 1, generator=g))
    validation = get_batch(task.validation, torch.arange(2)).inputs
    assert not torch.equal(validation[0, 32:], first[0, 32:])
    small = take(task.test, 3)
    assert len(small) == 3
    torch.testing.assert_close(get_batch(small, torch.arange(3)).inputs, first[:3])
    other = load_task("noise-cifar10", data_dir=tmp_path, validation=10, length=64, noise_seed=4)
    assert not torch.equal(get_batch(other.test, torch.arange(1)).inputs[0], first[0])


def test_reads_the_unextracted_archive(tmp_path):
    batches = make_batches()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, (data, labels) in batches.items():
            payload = batch_bytes(data, labels, name)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    task = load_task("scifar10", data_dir=tmp_path, validation=10)
    direct = load_task("scifar10", data_dir=write_cifar(tmp_path / "x") and tmp_path / "x",
                       validation=10)
    torch.testing.assert_close(task.test.tensors[0], direct.test.tensors[0])
    raw = (tmp_path / "cifar-10-python.tar.gz").read_bytes()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFormatError, match="cifar-10-python.tar.gz"):
        load_task("scifar10", data_dir=tmp_path, validation=10)


class _Exploit:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("damage", ["truncated", "exploit", "shape", "labels", "not-dict"])
def test_damaged_or_foreign_batches_raise_naming_the_file(tmp_path, damage):
    batches = write_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    data, labels = batches["data_batch_3"]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        expected = "truncated or corrupted CIFAR-10 batch"
    elif damage == "exploit":
        path.write_bytes(pickle.dumps({b"data": _Exploit(), b"labels": labels}, protocol=2))
        expected = "refused to unpickle.*posix.getcwd|refused to unpickle.*getcwd"
    elif damage == "shape":
        path.write_bytes(batch_bytes(data[:, :1024], labels, "x"))
        expected = r"uint8 array \(images, 3072\)"
    elif damage == "labels":
        path.write_bytes(batch_bytes(data, labels[:-1], "x"))
        expected = "7 labels for 8 images"
    else:
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
        expected = "expected a pickled dict"
    with pytest.raises(DataFormatError, match=expected) as error:
        load_task("scifar10", data_dir=tmp_path, validation=10)
    assert str(path) in str(error.value)


def test_missing_batches_say_what_where_and_how(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(MissingDataError) as error:
        load_task("noise-cifar10", data_dir=tmp_path)
    message = str(error.value)
    for part in ("missing test_batch", "cifar-10-python.tar.gz", "--data-dir",
                 "torchvision.datasets.CIFAR10", "data_batch_1"):
        assert part in message
