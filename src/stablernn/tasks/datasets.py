"""Splits that build their batches themselves (:class:`~stablernn.tasks.base.BatchDataset`).

- :class:`NoisePaddedDataset`: a signal followed by i.i.d. Gaussian noise drawn when the batch
  is built (``noise-cifar10``), fresh at every draw for training, fixed per sample for
  evaluation.
- :class:`NextFrameDataset`: sequences of different lengths, each step predicting the next
  frame, padded per batch with a mask (``timit``).
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets, _ = self.batch(torch.tensor([index]))
        return inputs[0], targets[0]

    @staticmethod
    def collate(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        return Batch(torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]))

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
