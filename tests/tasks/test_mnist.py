"""smnist / psmnist from MNIST IDX files written here in the exact standard format."""

import gzip

import numpy as np
import pytest
import torch
from mnist_files import TEST, TRAIN, idx_bytes, write_mnist  # tests/ is on sys.path

from stablernn.tasks import DataFormatError, MissingDataError, fixed_permutation, load_task
from stablernn.tasks.mnist import read_idx


def ids_of(inputs: torch.Tensor) -> np.ndarray:
    pixels = torch.round(inputs[:, :2, 0] * 255).long().numpy()
    return pixels[:, 0] + 256 * pixels[:, 1]


@pytest.mark.parametrize("gz", [False, True])
def test_smnist_splits_scaling_and_labels(tmp_path, gz):
    write_mnist(tmp_path, gz)
    task = load_task("smnist", data_dir=tmp_path, validation=10)
    assert (len(task.train), len(task.validation), len(task.test)) == (50, 10, 20)
    assert task.sequence_length == 784 and task.input_size == 1 and task.output_size == 10
    assert task.kind == "classification"
    x, y = task.train.tensors
    assert x.shape == (50, 784, 1) and x.dtype == torch.float32 and y.dtype == torch.long
    assert x.min() >= 0 and x.max() == 1
    # the documented split: RandomState(1234).permutation(60000)[:2000] held out (here 60, 10)
    order = np.random.RandomState(1234).permutation(TRAIN)
    np.testing.assert_array_equal(ids_of(task.validation.tensors[0]), order[:10])
    np.testing.assert_array_equal(ids_of(x), order[10:])
    # labels stay with their images
    for split in (task.train, task.validation, task.test):
        inputs, labels = split.tensors
        np.testing.assert_array_equal(ids_of(inputs) % 10, labels.numpy())
    np.testing.assert_array_equal(ids_of(task.test.tensors[0]), np.arange(1000, 1000 + TEST))


def test_psmnist_is_the_documented_permutation_of_smnist(tmp_path):
    write_mnist(tmp_path, gz=True)
    ordered = load_task("smnist", data_dir=tmp_path, validation=10)
    permuted = load_task("psmnist", data_dir=tmp_path, validation=10)
    torch.manual_seed(12008)
    documented = torch.randperm(784)
    torch.testing.assert_close(documented, fixed_permutation(784))
    assert permuted.info["permutation"] == documented.tolist()
    for a, b in ((ordered.train, permuted.train), (ordered.test, permuted.test)):
        torch.testing.assert_close(b.tensors[0], a.tensors[0][:, documented])
        torch.testing.assert_close(b.tensors[1], a.tensors[1])
    assert permuted.train.tensors[0].max() == 1  # same [0, 1] scaling as the ordered task


def test_torchvision_layout_and_dotted_names_and_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert len(load_task("smnist", data_dir=tmp_path, validation=10).test) == TEST
    other = tmp_path / "other"
    write_mnist(other, gz=False, prefix=".")
    monkeypatch.setenv("STABLERNN_DATA_DIR", str(other))
    assert len(load_task("smnist", validation=10).train) == 50


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "a", expected_dims=3), array)


@pytest.mark.parametrize("damage", ["truncated", "trailing", "magic", "dims", "gzip"])
def test_damaged_files_raise_naming_the_file(tmp_path, damage):
    files = write_mnist(tmp_path, gz=False)
    name = "train-images-idx3-ubyte"
    path = tmp_path / name
    data = idx_bytes(files[name])
    if damage == "truncated":
        path.write_bytes(data[:-100])
        expected = r"truncated IDX file.*shape \(60, 28, 28\).*47,056 bytes were expected"
    elif damage == "trailing":
        path.write_bytes(data + b"\0")
        expected = "trailing bytes"
    elif damage == "magic":
        path.write_bytes(b"\x12\x34" + data[2:])
        expected = "not an IDX file.*0x00000803 for images"
    elif damage == "dims":
        path.write_bytes(idx_bytes(files["train-labels-idx1-ubyte"]))
        expected = "expected an IDX file with 3 dimension"
    else:
        path.unlink()
        path = tmp_path / (name + ".gz")
        path.write_bytes(gzip.compress(data)[:-50])
        expected = "truncated or corrupted gzip"
    with pytest.raises(DataFormatError, match=expected) as error:
        load_task("smnist", data_dir=tmp_path, validation=10)
    assert str(path) in str(error.value)


def test_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataFormatError, match="5 labels for 20 images"):
        load_task("psmnist", data_dir=tmp_path, validation=10)


def test_missing_files_say_what_where_and_how(tmp_path, monkeypatch):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MissingDataError) as error:
        load_task("smnist", data_dir=tmp_path)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    for part in ("t10k-labels-idx1-ubyte", str(tmp_path), "IDX", "--data-dir",
                 "torchvision.datasets.MNIST", "download=True", "never downloads"):
        assert part in message
    assert "train-images" not in message.split("missing")[1].split(".")[0]
    monkeypatch.delenv("STABLERNN_DATA_DIR", raising=False)
    with pytest.raises(MissingDataError, match="--data-dir DIR.*STABLERNN_DATA_DIR"):
        load_task("smnist")
    with pytest.raises(MissingDataError, match="does not exist"):
        load_task("smnist", data_dir=tmp_path / "nowhere")


def test_eight_pixels_per_step_are_consecutive_pixels_of_the_sequence(tmp_path):
    write_mnist(tmp_path, gz=False)
    one = load_task("psmnist", data_dir=tmp_path, validation=10)
    eight = load_task("psmnist", data_dir=tmp_path, validation=10, pixels_per_step=8)
    assert eight.input_size == 8 and eight.sequence_length == 98
    torch.testing.assert_close(eight.test.tensors[0], one.test.tensors[0].reshape(TEST, 98, 8))
