"""Splits that build their batches themselves (:class:`~stablernn.tasks.base.BatchDataset`).

- :class:`NoisePaddedDataset`: a signal followed by i.i.d. Gaussian noise drawn when the batch
  is built (``noise-cifar10``), fresh at every draw for training, fixed per sample for
  evaluation.
- :class:`NextFrameDataset`: sequences of different lengths, each step predicting the next
  frame, padded per batch with a mask (``timit``).
- :class:`AugmentedImageDataset`: images randomly cropped (after zero padding) and flipped
  when the batch is built, then read as pixel sequences (``scifar10`` with ``augment``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stablernn.tasks.base import Batch, BatchDataset


class NoisePaddedDataset(BatchDataset):
    """Sample ``i``: ``signal[i]`` (``S`` steps) then ``length - S`` steps of Gaussian noise.

    The noise is i.i.d. ``N(0, noise_std**2)`` in every step and feature, drawn when a sample
    is built, so it is never stored (``length`` x ``features`` floats per sample would not fit
    in memory for CIFAR-10 at T = 1000).

    - ``noise_seed=None`` (training): fresh noise at every draw, for every sample and epoch.
      :meth:`batch` draws it from the ``generator`` it is given (torch's global generator when
      ``None``); pass a generator whose state the training loop checkpoints, and a resumed run
      draws the same noise as an uninterrupted one. :meth:`__getitem__` draws from torch's
      global generator, which ``torch.utils.data.DataLoader`` seeds differently in each worker.
    - ``noise_seed=s`` (evaluation): fixed noise; the sample with id ``i`` (its index in the
      split it was built with, kept by :meth:`subset`) always gets the noise
      ``torch.empty(length - S, features).normal_(0, noise_std, generator=g)`` with
      ``g = torch.Generator().manual_seed(SeedSequence([s, i]).generate_state(1)[0])``
      (numpy's SeedSequence; :meth:`sample_seed`), whatever the batch it is in, so
      evaluations are comparable between epochs and runs while the noise stays independent
      between samples.

    Rows are filled one sample at a time, so the fresh noise of a batch depends on the
    generator's state and the order of ``indices``, not on how the batch is split.
    """

    def __init__(self, signal: torch.Tensor, targets: torch.Tensor, length: int,
                 noise_std: float = 1.0, noise_seed: int | None = None,
                 ids: torch.Tensor | None = None):
        if signal.dim() != 3:
            raise ValueError(f"signal must be (samples, steps, features), got {tuple(signal.shape)}")
        if length < signal.shape[1]:
            raise ValueError(f"length ({length}) must be >= the signal's {signal.shape[1]} steps")
        if len(targets) != len(signal):
            raise ValueError(f"{len(targets)} targets for {len(signal)} signals")
        self.signal, self.targets = signal, targets
        self.length, self.noise_std, self.noise_seed = int(length), float(noise_std), noise_seed
        self.ids = torch.arange(len(signal)) if ids is None else torch.as_tensor(ids)

    @property
    def noise_steps(self) -> int:
        return self.length - self.signal.shape[1]

    def __len__(self) -> int:
        return len(self.signal)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        indices = torch.as_tensor(indices, dtype=torch.long)
        steps = self.signal.shape[1]
        inputs = torch.empty((len(indices), self.length, self.signal.shape[2]))
        inputs[:, :steps] = self.signal[indices]
        for row, sample in enumerate(self.ids[indices].tolist()):  # rows: contiguous, fast
            if self.noise_seed is not None:
                generator = torch.Generator().manual_seed(self.sample_seed(sample))
            inputs[row, steps:].normal_(0.0, self.noise_std, generator=generator)
        return Batch(inputs, self.targets[indices], None)

    def sample_seed(self, sample: int) -> int:
        """The 32-bit seed of the fixed noise of sample id ``sample``.

        ``numpy.random.SeedSequence([noise_seed, sample]).generate_state(1)[0]``: torch's CPU
        generator keeps only the low 32 bits of a seed, so the two numbers are mixed first.
        """
        return int(np.random.SeedSequence([self.noise_seed, int(sample)]).generate_state(1)[0])

    def subset(self, indices: torch.Tensor) -> NoisePaddedDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return NoisePaddedDataset(self.signal[indices], self.targets[indices], self.length,
                                  self.noise_std, self.noise_seed, self.ids[indices])


class NextFrameDataset(BatchDataset):
    """Sequences of frames of different lengths; every step predicts the next frame.

    Sequence ``i`` of ``L_i`` frames gives inputs ``frames[:-1]`` and targets ``frames[1:]``
    (``L_i - 1`` steps). :meth:`batch` pads inputs and targets with zeros to the longest
    sequence in the batch and returns ``mask`` (``(batch, T)`` bool, True on real steps): the
    loss must only count the steps the mask keeps.
    """

    def __init__(self, sequences: Sequence[torch.Tensor]):
        if any(s.dim() != 2 or len(s) < 2 for s in sequences):
            raise ValueError("every sequence must be (frames >= 2, features)")
        if len({s.shape[1] for s in sequences}) > 1:
            raise ValueError("all sequences must have the same number of features")
        self.sequences = list(sequences)
        self.lengths = torch.tensor([len(s) - 1 for s in self.sequences], dtype=torch.long)

    @property
    def features(self) -> int:
        return self.sequences[0].shape[1] if self.sequences else 0

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.sequences[index]
        return frames[:-1], frames[1:]

    @staticmethod
    def collate(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        steps = max(len(inputs) for inputs, _ in samples)
        features = samples[0][0].shape[1]
        inputs = torch.zeros((len(samples), steps, features))
        targets = torch.zeros((len(samples), steps, features))
        mask = torch.zeros((len(samples), steps), dtype=torch.bool)
        for row, (x, y) in enumerate(samples):
            inputs[row, :len(x)], targets[row, :len(y)], mask[row, :len(x)] = x, y, True
        return Batch(inputs, targets, mask)

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        return self.collate([self[i] for i in torch.as_tensor(indices).tolist()])

    def subset(self, indices: torch.Tensor) -> NextFrameDataset:
        return NextFrameDataset([self.sequences[i] for i in torch.as_tensor(indices).tolist()])


class AugmentedImageDataset(BatchDataset):
    """Images ``(n, C, H, W)``, augmented when a batch is built, then read pixel by pixel.

    The augmentation of torchvision's ``RandomCrop(H, padding=pad)`` followed by
    ``RandomHorizontalFlip()`` (what the official Lipschitz RNN code applied to CIFAR-10
    training images): each image is padded by ``pad`` pixels on every side with ``fill`` (one
    value per channel: the value a black pixel has after normalization, so the padding is
    black as in torchvision, which pads before ``ToTensor``/``Normalize``), an ``H x W`` window
    is cut at offsets ``(top, left)`` drawn uniformly from ``0 .. 2 pad``, and the window is
    mirrored left-right with probability 1/2. The random numbers come from ``generator``
    (torch's global generator when ``None``): for a batch of ``n`` images, first
    ``torch.randint(0, 2 pad + 1, (n, 2))`` (top, left), then ``torch.rand(n) < 0.5`` (flip),
    so a training loop that checkpoints its generator resumes with the same draws.

    Step ``t`` of a sample is pixel ``t`` in raster order, its ``C`` channels the features
    (``(n, H W, C)``), as ``scifar10`` reads CIFAR-10.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, fill: torch.Tensor,
                 pad: int = 4):
        if images.dim() != 4:
            raise ValueError(f"images must be (samples, channels, height, width), got "
                             f"{tuple(images.shape)}")
        if len(targets) != len(images):
            raise ValueError(f"{len(targets)} targets for {len(images)} images")
        self.images, self.targets, self.pad = images, targets, int(pad)
        self.fill = torch.as_tensor(fill, dtype=images.dtype).reshape(-1)
        if len(self.fill) != images.shape[1]:
            raise ValueError(f"fill needs one value per channel ({images.shape[1]}), got "
                             f"{len(self.fill)}")

    def __len__(self) -> int:
        return len(self.images)

    def augment(self, images: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Randomly cropped (after padding with ``fill``) and flipped copies of ``images``."""
        count, channels, height, width = images.shape
        pad = self.pad
        padded = self.fill.view(1, channels, 1, 1).expand(
            count, channels, height + 2 * pad, width + 2 * pad).clone()
        padded[:, :, pad:pad + height, pad:pad + width] = images
        offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)
        flips = torch.rand(count, generator=generator) < 0.5
        rows = (offsets[:, 0:1] + torch.arange(height)).view(count, 1, height, 1)
        columns = (offsets[:, 1:2] + torch.arange(width)).view(count, 1, 1, width)
        columns = torch.where(flips.view(count, 1, 1, 1), columns.flip(-1), columns)
        samples = torch.arange(count).view(count, 1, 1, 1)
        return padded[samples, torch.arange(channels).view(1, channels, 1, 1), rows, columns]

    @staticmethod
    def sequences(images: torch.Tensor) -> torch.Tensor:
        """``(n, C, H, W)`` -> ``(n, H W, C)``: step ``t`` is pixel ``t`` in raster order."""
        count, channels = images.shape[:2]
        return images.reshape(count, channels, -1).transpose(1, 2).contiguous()

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> Batch:
        indices = torch.as_tensor(indices, dtype=torch.long)
        images = self.augment(self.images[indices], generator)
        return Batch(self.sequences(images), self.targets[indices], None)

    def subset(self, indices: torch.Tensor) -> AugmentedImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return AugmentedImageDataset(self.images[indices], self.targets[indices], self.fill,
                                     self.pad)
