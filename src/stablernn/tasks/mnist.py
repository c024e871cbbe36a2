"""Sequential and permuted MNIST (``smnist``, ``psmnist``) from the standard IDX files.

Files (in ``data_dir``, or ``data_dir/MNIST/raw`` where ``torchvision.datasets.MNIST`` puts
them), gzipped (``.gz``) or not::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

(``train-images.idx3-ubyte`` spellings are accepted too). Fashion-MNIST ships files of the same
names and format, and loads the same way.

As in both papers (paper 002, section 6.1 and appendix B; paper 000, section 4): every image is
read pixel by pixel in raster order (T = 784, one feature), pixels scaled to [0, 1] by 255 for
both variants; the class is predicted after the last pixel. ``psmnist`` applies one fixed
permutation, ``torch.randperm(784, generator=torch.Generator().manual_seed(12008))`` (the seed
of the official Lipschitz RNN code, equal to ``torch.manual_seed(12008); torch.randperm(784)``).
Validation: 2,000 of the 60,000 training images held out; training is the other 58,000; test
is the 10,000 t10k images. Which 2,000 is the option ``validation_from``:

- ``"start"`` (default): ``numpy.random.RandomState(1234).permutation(60000)[:2000]``;
- ``"end"``: ``numpy.random.RandomState(1234).permutation(60000)[58000:]``, the split of the
  official Lipschitz RNN code (``R = rng.permutation(60000)``, validation ``R[58000:]``, training
  ``R[:58000]``): with the default ``split_seed`` and ``validation`` the same images.

IDX format (http://yann.lecun.com/exdb/mnist/, section "file formats"): 2 zero bytes, a type
code (0x08 = unsigned byte), the number of dimensions, then each dimension as a big-endian
32-bit integer, then the data in C order. Images: magic 0x00000803, dims (count, rows, cols);
labels: magic 0x00000801, dims (count,).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from stablernn._checks import check_choice, check_int
from stablernn.tasks.base import VALIDATION_FROM, SequenceTask, pixel_sequences, split_indices
from stablernn.tasks.bundled import PERMUTATION_SEED, SPLIT_SEED, fixed_permutation
from stablernn.tasks.files import (
    DataFormatError,
    MissingDataError,
    find_file,
    read_bytes,
    resolve_data_dir,
)

VALIDATION_SIZE = 2000
IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
HELP = (
    "MNIST is expected as the four standard IDX files, gzipped (.gz) or not: "
    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, in DIR or DIR/MNIST/raw (pass DIR with --data-dir). "
    "stablernn never downloads; on a machine that is online, fetch them with "
    "`python -c \"import torchvision; torchvision.datasets.MNIST('DIR', download=True)\"` "
    "(writes DIR/MNIST/raw) or download the four .gz files from the MNIST page of "
    "Yann LeCun's site (yann.lecun.com/exdb/mnist) or a mirror of it, then copy them here."
)


def read_idx(path: str | os.PathLike, expected_dims: int | None = None) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array; a DataFormatError naming the file if not."""
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: expected an IDX file (a 4-byte magic number, sizes, "
                              f"data) but it holds only {len(data)} bytes")
    zero, type_code, dims = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in IDX_TYPES or dims == 0:
        raise DataFormatError(
            f"{path}: not an IDX file: magic number 0x{data[:4].hex()} (expected 0x000008NN "
            "for unsigned bytes: 0x00000803 for images, 0x00000801 for labels)")
    if expected_dims is not None and dims != expected_dims:
        raise DataFormatError(
            f"{path}: expected an IDX file with {expected_dims} dimension(s) (magic number "
            f"0x000008{expected_dims:02x}), found {dims} (magic number 0x{data[:4].hex()})")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataFormatError(f"{path}: truncated IDX header: expected {header} bytes of magic "
                              f"number and sizes, found {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    dtype = IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "corrupted (trailing bytes)"
        raise DataFormatError(
            f"{path}: {state} IDX file: its header gives shape {shape}, so "
            f"{expected:,} bytes were expected, found {len(data):,}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).copy()  # writable


def _locate(root: Path) -> dict[str, Path]:
    directories = [root, root / "MNIST" / "raw", root / "mnist"]
    found, missing = {}, []
    for key, names in FILES.items():
        path = find_file(directories, [n + suffix for n in names for suffix in ("", ".gz")])
        if path is None:
            missing.append(names[0])
        else:
            found[key] = path
    if missing:
        raise MissingDataError(
            f"MNIST files not found in {', '.join(str(d) for d in directories)}: missing "
            f"{', '.join(missing)} (or .gz). {HELP}")
    return found


def load_mnist_arrays(data_dir: str | os.PathLike | None, task: str = "smnist"):
    """``(train_images, train_labels, test_images, test_labels)`` as uint8 arrays, checked."""
    paths = _locate(resolve_data_dir(data_dir, task, HELP))
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], expected_dims=3)
        labels = read_idx(paths[f"{split}_labels"], expected_dims=1)
        for name, array in (("images", images), ("labels", labels)):
            if array.dtype != np.dtype(">u1"):
                raise DataFormatError(f"{paths[f'{split}_{name}']}: expected unsigned bytes "
                                      f"(IDX type 0x08), found {array.dtype}")
        if len(images) != len(labels):
            raise DataFormatError(
                f"{paths[f'{split}_labels']}: {len(labels)} labels for {len(images)} images in "
                f"{paths[f'{split}_images']}; the counts must match")
        if labels.size and labels.max() > 9:
            raise DataFormatError(f"{paths[f'{split}_labels']}: labels must be digits 0-9, "
                                  f"found {int(labels.max())}")
        arrays[split] = (images, labels)
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise DataFormatError(f"training images are {arrays['train'][0].shape[1:]} but test "
                              f"images {arrays['test'][0].shape[1:]}")
    return (*arrays["train"], *arrays["test"])


def mnist_task(data_dir: str | os.PathLike | None = None, permuted: bool = False,
               validation: int = VALIDATION_SIZE, split_seed: int = SPLIT_SEED,
               permutation_seed: int = PERMUTATION_SEED,
               validation_from: str = "start", pixels_per_step: int = 1) -> SequenceTask:
    """sMNIST (``permuted=False``) or psMNIST: see the module docstring. ``pixels_per_step``
    consecutive pixels form one step (8: the 98-step sequences of paper 002 section 7)."""
    name = "psmnist" if permuted else "smnist"
    validation = check_int("task option validation", validation)
    pixels_per_step = check_int("task option pixels_per_step", pixels_per_step)
    check_choice("task option validation_from", validation_from, VALIDATION_FROM)
    train_images, train_labels, test_images, test_labels = load_mnist_arrays(data_dir, name)
    rows, cols = train_images.shape[1:]
    length = rows * cols
    permutation = fixed_permutation(length, permutation_seed) if permuted else None
    inputs, targets = pixel_sequences(train_images, train_labels, 255.0, permutation,
                                      pixels_per_step)
    test_inputs, test_targets = pixel_sequences(test_images, test_labels, 255.0, permutation,
                                                pixels_per_step)
    train_idx, val_idx, _ = split_indices(len(inputs), validation, 0, split_seed, validation_from)
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    order = f"permuted (seed {permutation_seed})" if permuted else "raster order"
    return SequenceTask(
        name=name,
        train=TensorDataset(inputs[train_idx], targets[train_idx]),
        validation=TensorDataset(inputs[val_idx], targets[val_idx]),
        test=TensorDataset(test_inputs, test_targets),
        input_size=pixels_per_step, output_size=10, sequence_length=inputs.shape[1],
        description=(f"MNIST, {rows}x{cols} pixels, {pixels_per_step} per step, {order}, "
                     "scaled to [0, 1]; "
                     f"{validation} training images held out for validation"
                     + (" (the last of the shuffle)" if validation_from == "end" else "")),
        info={"permutation": None if permutation is None else permutation.tolist()},
    )
