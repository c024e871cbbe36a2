"""Sequential CIFAR-10 (``scifar10``) and noise-padded CIFAR-10 (``noise-cifar10``).

Files: the CIFAR-10 "python version": ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``
in ``data_dir`` or ``data_dir/cifar-10-batches-py`` (where ``torchvision.datasets.CIFAR10``
extracts them), or the unextracted archive ``data_dir/cifar-10-python.tar.gz``. Each batch is
a pickled dict with ``b'data'`` (uint8, ``(10000, 3072)``: the 1024 red pixels of an image in
raster order, then the 1024 green, then the 1024 blue) and ``b'labels'`` (10,000 ints 0-9).

CIFAR-10's own format is a Python pickle, and unpickling can run code. These files are read
with a restricted unpickler that only builds dicts, lists, strings, numbers and numpy arrays
(the globals a CIFAR batch needs: ``numpy`` ``_reconstruct``/``ndarray``/``dtype``/``scalar``/
``_frombuffer`` and ``_codecs.encode``) and refuses any other global, so a tampered file raises
a DataFormatError instead of running code. Still, only use files you obtained from a source
you trust.

Both tasks hold ``validation`` (default 5,000) of the 50,000 training images out for
validation: with ``order = numpy.random.RandomState(split_seed=1234).permutation(50000)``,
``order[:validation]`` (``validation_from="start"``, default) or ``order[50000 - validation:]``
(``"end"``: the official Lipschitz RNN code held out ``R[48000:]``, so ``validation=2000,
validation_from="end"`` is its split); the test split is ``test_batch``. Pixels are scaled to
[0, 1] and then normalized per channel with the mean and standard deviation of the
(remaining) training images' pixels (in ``task.info``; the official code normalized sCIFAR
with the fixed constants ``(0.4914, 0.4822, 0.4465)`` / ``(0.2023, 0.1994, 0.2010)`` and
noise-padded CIFAR not at all).

- ``scifar10`` (paper 002 appendix B.2; paper 000 section 4): T = 1024 steps in raster order,
  step ``t`` is the RGB triple of pixel ``t`` (``x[t] = (R[t], G[t], B[t])``, F = 3). The official
  Lipschitz RNN code reshaped the channel-major rows so that a step held three pixels of one
  channel; that is not what the paper describes and is not done here. ``augment=True`` (the
  official training protocol; default False) randomly crops every training image after
  padding it with 4 black pixels per side and flips it left-right with probability 1/2, each
  time a batch is drawn, before it is read as a sequence (see
  :class:`~stablernn.tasks.datasets.AugmentedImageDataset`; the random numbers come from the
  generator given to :func:`~stablernn.tasks.get_batch`). Validation and test images are
  never augmented (the official validation split, a subset of the augmented training set,
  was).
- ``noise-cifar10`` (paper 002 appendix B.2, after Chang et al. 2019): step ``t < 32`` is row
  ``t`` of the image with the three channels' rows stacked (``x[t] = (R[t, :], G[t, :],
  B[t, :])``, F = 96), then i.i.d. standard Gaussian noise up to T = ``length`` = 1000 (968 noise
  steps); the class is predicted after the last step. Training noise is fresh for every sample
  at every draw (the official code reused one fixed noise tensor); validation and test noise
  is fixed per sample (see :class:`~stablernn.tasks.datasets.NoisePaddedDataset`; validation
  uses ``noise_seed``, test ``noise_seed + 1``). These splits are BatchDatasets: read them
  with :func:`stablernn.tasks.get_batch`.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from stablernn._checks import check_bool, check_choice, check_int
from stablernn.tasks.base import VALIDATION_FROM, SequenceTask, split_indices
from stablernn.tasks.bundled import SPLIT_SEED
from stablernn.tasks.datasets import AugmentedImageDataset, NoisePaddedDataset
from stablernn.tasks.files import DataFormatError, MissingDataError, find_file, resolve_data_dir

VALIDATION_SIZE = 5000
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_FOLDER = "cifar-10-batches-py"
SIDE, PIXELS = 32, 1024
AUGMENT_PADDING = 4  # pixels per side, as torchvision's RandomCrop(32, padding=4)
HELP = (
    "CIFAR-10 is expected in its python version: the pickled batches data_batch_1 ... "
    "data_batch_5 and test_batch, in DIR or DIR/cifar-10-batches-py, or the archive "
    "DIR/cifar-10-python.tar.gz (pass DIR with --data-dir). stablernn never downloads; on a "
    "machine that is online, fetch it with `python -c \"import torchvision; "
    "torchvision.datasets.CIFAR10('DIR', download=True)\"` or download "
    "cifar-10-python.tar.gz from the CIFAR page of Alex Krizhevsky's site "
    "(www.cs.toronto.edu/~kriz/cifar.html), then copy it here."
)


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only builtin containers and numpy arrays; refuses every other global."""

    allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"global {module}.{name} is not part of the CIFAR-10 format") from None


def load_cifar_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 (n, 3072), labels int64 (n,))`` from the bytes of one batch file."""
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _RefusedGlobal as error:
        raise DataFormatError(
            f"{source}: refused to unpickle: {error}; a CIFAR-10 batch holds only a dict "
            "of numpy arrays, lists and strings (is this file what it claims to be?)"
        ) from None
    except Exception as error:  # noqa: BLE001 - EOFError, ValueError, ... from a damaged file
        raise DataFormatError(
            f"{source}: truncated or corrupted CIFAR-10 batch pickle "
            f"({type(error).__name__}: {error}); expected a pickled dict with b'data' and "
            "b'labels'") from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{source}: expected a pickled dict with b'data' and b'labels', "
                              f"found {type(batch).__name__}")
    batch = {key.decode("latin1") if isinstance(key, bytes) else key: value
             for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataFormatError(f"{source}: expected keys b'data' and b'labels', found "
                              f"{sorted(map(str, batch))}")
    data, labels = batch["data"], batch["labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * PIXELS):
        description = (f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray)
                       else type(data).__name__)
        raise DataFormatError(f"{source}: b'data' must be a uint8 array (images, 3072), "
                              f"found {description}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataFormatError(f"{source}: b'labels' must be a list of integers") from None
    if labels.shape != (len(data),):
        raise DataFormatError(f"{source}: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{source}: labels must be classes 0-9, found "
                              f"{labels.min()}..{labels.max()}")
    return data, labels


def _read_batches(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = (*TRAIN_FILES, TEST_FILE)
    directories = [root, root / ARCHIVE_FOLDER]
    paths = {name: find_file(directories, [name]) for name in names}
    if all(paths.values()):
        return {name: load_cifar_batch(path.read_bytes(), str(path))
                for name, path in paths.items()}
    archive = root / ARCHIVE
    if archive.is_file():
        batches = {}
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for name in names:
                    try:
                        member = tar.extractfile(f"{ARCHIVE_FOLDER}/{name}")
                    except KeyError:
                        member = None
                    if member is None:
                        raise DataFormatError(f"{archive}: expected member "
                                              f"{ARCHIVE_FOLDER}/{name}, not found")
                    batches[name] = load_cifar_batch(member.read(), f"{archive}:{name}")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise DataFormatError(f"{archive}: truncated or corrupted archive ({error}); "
                                  "download it again") from None
        return batches
    missing = [name for name, path in paths.items() if path is None]
    raise MissingDataError(
        f"CIFAR-10 files not found in {', '.join(str(d) for d in directories)}: missing "
        f"{', '.join(missing)} (and no {ARCHIVE}). {HELP}")


def load_cifar10_arrays(data_dir: str | os.PathLike | None, task: str = "scifar10"):
    """``(train_data, train_labels, test_data, test_labels)``: uint8 ``(n, 3072)``, int64."""
    batches = _read_batches(resolve_data_dir(data_dir, task, HELP))
    train = [batches[name] for name in TRAIN_FILES]
    return (np.concatenate([data for data, _ in train]),
            np.concatenate([labels for _, labels in train]), *batches[TEST_FILE])


def channel_statistics(data: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of pixels / 255 (exact, from histograms)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for channel in range(3):
        counts = np.bincount(data[:, channel * PIXELS:(channel + 1) * PIXELS].ravel(),
                             minlength=256).astype(np.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        variance = (counts * (values - mean) ** 2).sum() / total
        means.append(mean)
        stds.append(max(np.sqrt(variance), 1e-8))
    return torch.tensor(means, dtype=torch.float32), torch.tensor(stds, dtype=torch.float32)


def normalized_images(data: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(n, 3, 32, 32)`` float32 images, scaled to [0, 1] then normalized per channel."""
    images = torch.from_numpy(data).reshape(len(data), 3, SIDE, SIDE).to(torch.float32)
    return images.div_(255.0).sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))


def _splits(data_dir, task, validation, split_seed, validation_from="start"):
    validation = check_int("task option validation", validation)
    check_choice("task option validation_from", validation_from, VALIDATION_FROM)
    train_data, train_labels, test_data, test_labels = load_cifar10_arrays(data_dir, task)
    train_idx, val_idx, _ = split_indices(len(train_data), validation, 0, split_seed,
                                          validation_from)
    mean, std = channel_statistics(train_data[train_idx])
    splits = {
        "train": (train_data[train_idx], train_labels[train_idx]),
        "validation": (train_data[val_idx], train_labels[val_idx]),
        "test": (test_data, test_labels),
    }
    info = {"channel_mean": mean.tolist(), "channel_std": std.tolist()}
    return {name: (normalized_images(data, mean, std), torch.as_tensor(labels))
            for name, (data, labels) in splits.items()}, info


def scifar10_task(data_dir: str | os.PathLike | None = None, validation: int = VALIDATION_SIZE,
                  split_seed: int = SPLIT_SEED, validation_from: str = "start",
                  augment: bool = False) -> SequenceTask:
    """Sequential CIFAR-10: 1024 steps of one RGB triple each (see the module docstring)."""
    check_bool("task option augment", augment)
    splits, info = _splits(data_dir, "scifar10", validation, split_seed, validation_from)

    def sequences(images, labels):  # (n, 3, 32, 32) -> (n, 1024, 3): step t = pixel t
        return TensorDataset(AugmentedImageDataset.sequences(images), labels)

    if augment:  # padded with black: the normalized value of a pixel 0
        black = -torch.tensor(info["channel_mean"]) / torch.tensor(info["channel_std"])
        train = AugmentedImageDataset(*splits["train"], fill=black, pad=AUGMENT_PADDING)
        info = {**info, "augmentation": f"random crop ({AUGMENT_PADDING}-pixel black padding) "
                                        "and horizontal flip, training batches only"}
    else:
        train = sequences(*splits["train"])
    return SequenceTask(
        name="scifar10", train=train,
        validation=sequences(*splits["validation"]), test=sequences(*splits["test"]),
        input_size=3, output_size=10, sequence_length=PIXELS,
        description=("CIFAR-10, 32x32 pixels one RGB triple per step in raster order, "
                     f"normalized per channel; {validation} training images held out for "
                     "validation" + (" (the last of the shuffle)" if validation_from == "end"
                                     else "")
                     + ("; training images randomly cropped and flipped" if augment else "")),
        info=info,
    )


def noise_cifar10_task(data_dir: str | os.PathLike | None = None, length: int = 1000,
                       noise_std: float = 1.0, noise_seed: int = 0,
                       validation: int = VALIDATION_SIZE,
                       split_seed: int = SPLIT_SEED,
                       validation_from: str = "start") -> SequenceTask:
    """Noise-padded CIFAR-10: 32 row steps of 96 values, then Gaussian noise up to ``length``."""
    length = check_int("task option length", length, SIDE)
    noise_seed = check_int("task option noise_seed", noise_seed, 0)
    if noise_seed >= 2**31:
        raise ValueError(f"task option noise_seed must be < 2**31, got {noise_seed}")
    if not isinstance(noise_std, (int, float)) or isinstance(noise_std, bool) or noise_std < 0:
        raise ValueError(f"task option noise_std must be a number >= 0, got {noise_std!r}")
    splits, info = _splits(data_dir, "noise-cifar10", validation, split_seed, validation_from)

    def rows(images):  # (n, 3, 32, 32) -> (n, 32, 96): step t = (R row t, G row t, B row t)
        return images.permute(0, 2, 1, 3).reshape(len(images), SIDE, 3 * SIDE).contiguous()

    def dataset(split, seed):
        images, labels = splits[split]
        return NoisePaddedDataset(rows(images), labels, length, noise_std, seed)

    return SequenceTask(
        name="noise-cifar10", train=dataset("train", None),
        validation=dataset("validation", noise_seed), test=dataset("test", noise_seed + 1),
        input_size=3 * SIDE, output_size=10, sequence_length=length,
        description=(f"CIFAR-10, 32 row steps of 96 values (3 channels x 32 columns) then "
                     f"{length - SIDE} steps of N(0, {noise_std:g}^2) noise, fresh per draw "
                     f"in training; {validation} training images held out for validation"),
        info={**info, "noise_steps": length - SIDE, "noise_std": float(noise_std),
              "noise_seeds": {"validation": noise_seed, "test": noise_seed + 1}},
    )
