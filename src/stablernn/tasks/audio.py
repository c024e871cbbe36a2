"""Next-frame prediction of speech spectra (``timit``), paper 002 section 6.2.

TIMIT (Garofolo et al. 1993) is licensed by the Linguistic Data Consortium (LDC93S1) and
cannot be downloaded; this task is for users who have it. Layout (pass DIR with
``--data-dir``)::

    DIR/train/**/*.wav    DIR/valid/**/*.wav    DIR/test/**/*.wav

(``validation`` or ``dev`` for ``valid``; names in any case; files searched recursively and
read in sorted path order). The files must be RIFF WAV (any sample rate, 8/16/32-bit integer
or float, mono or multi-channel averaged to mono). TIMIT's own ``.WAV`` files are NIST SPHERE,
not RIFF: convert them first, e.g. ``sox in.WAV out.wav`` or ``sph2pipe -f wav in.WAV
out.wav``. The paper's split (from Wisdom et al. 2016, via Lezcano-Casado & Martinez-Rubio
2019): training = TIMIT's TRAIN directory without the two dialect sentences SA1/SA2 read by
every speaker (3,696 utterances, 462 speakers); validation = 192 and test = 400 utterances
of TIMIT's TEST directory (core test and development speakers, SA sentences excluded). With
``exclude_sa=True`` (default) files named ``SA1``/``SA2`` are skipped in every split.

Preprocessing (paper 002 section 6.2, after Wisdom et al. 2016, whose code
``timit_prediction.py`` with ``data_transform='logmag'`` the paper's pipeline used):

1. samples scaled to [-1, 1) (int16 / 32768), resampled to 8 kHz with
   ``scipy.signal.resample_poly`` when the file has another rate;
2. short-time Fourier transform: periodic Hann window of 256 samples, hop 128, the end
   zero-padded to a whole frame, no scaling: 129 frequency bins per frame;
3. log-magnitude in decibels, ``10 log10(|X|^2 + 1e-5)`` (``log_floor``);
4. normalized per frequency bin with the mean and standard deviation of all training frames
   (in ``task.info``; the reference code normalized the test set with its own statistics).

Each utterance of ``L`` frames gives ``L - 1`` steps: input frame ``t``, target frame ``t + 1``
(``kind="sequence-regression"``, 129 features in and out). Utterances differ in length, so the
splits are :class:`~stablernn.tasks.datasets.NextFrameDataset`\\ s: read them with
:func:`stablernn.tasks.get_batch`, which pads a batch and returns a mask; the reported figure
is the mean squared error over the 129 bins of every real (unmasked) step (the loss of the
reference code: ``MSELoss`` over the masked elements).
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal
import torch

from stablernn._checks import check_int
from stablernn.tasks.base import SequenceTask
from stablernn.tasks.datasets import NextFrameDataset
from stablernn.tasks.files import DataFormatError, MissingDataError, resolve_data_dir

SAMPLE_RATE, WINDOW, HOP, LOG_FLOOR = 8000, 256, 128, 1e-5
SPLIT_NAMES = {"train": ("train",), "validation": ("valid", "validation", "dev"),
               "test": ("test",)}
SPHERE_HELP = (
    "TIMIT's original .WAV files are NIST SPHERE, not RIFF WAV: convert each one first, e.g. "
    "`sox in.WAV out.wav` or `sph2pipe -f wav in.WAV out.wav`"
)
HELP = (
    "TIMIT is expected as RIFF WAV files in DIR/train, DIR/valid (or validation, dev) and "
    "DIR/test, searched recursively (pass DIR with --data-dir). TIMIT is licensed by the LDC "
    f"(catalog LDC93S1) and is never downloaded; {SPHERE_HELP}."
)


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """``(sample_rate, mono float64 samples in [-1, 1))``, or a DataFormatError naming the file."""
    with open(path, "rb") as file:
        head = file.read(12)
    if head.startswith(b"NIST_1A"):
        raise DataFormatError(f"{path}: a NIST SPHERE file, not RIFF WAV. {SPHERE_HELP}")
    if not head.startswith((b"RIFF", b"RIFX")) or head[8:12] != b"WAVE":
        raise DataFormatError(f"{path}: expected a RIFF WAV file (starting with 'RIFF....WAVE'), "
                              f"found {head[:12]!r}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rate, samples = scipy.io.wavfile.read(path)
    except Exception as error:  # noqa: BLE001 - struct.error, ValueError, ... on damaged headers
        raise DataFormatError(f"{path}: truncated or corrupted WAV file "
                              f"({type(error).__name__}: {error})") from None
    for warning in caught:
        if "EOF" in str(warning.message):
            raise DataFormatError(f"{path}: truncated WAV file ({warning.message})")
    if np.issubdtype(samples.dtype, np.integer):
        if samples.dtype == np.uint8:
            samples = (samples.astype(np.float64) - 128.0) / 128.0
        else:
            samples = samples.astype(np.float64) / float(2 ** (8 * samples.dtype.itemsize - 1))
    else:
        samples = samples.astype(np.float64)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return int(rate), samples


def log_spectrogram(samples: np.ndarray, window: int = WINDOW, hop: int = HOP,
                    log_floor: float = LOG_FLOOR) -> np.ndarray:
    """``(frames, window // 2 + 1)`` float32: ``10 log10(|STFT|^2 + log_floor)``."""
    frames = 1 + -(-max(len(samples) - window, 0) // hop)
    padded = np.zeros((frames - 1) * hop + window)
    padded[:len(samples)] = samples
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop]
    spectrum = np.fft.rfft(windows * scipy.signal.get_window("hann", window), axis=1)
    return (10.0 * np.log10(np.abs(spectrum) ** 2 + log_floor)).astype(np.float32)


def utterance_features(path: Path, sample_rate: int = SAMPLE_RATE, window: int = WINDOW,
                       hop: int = HOP, log_floor: float = LOG_FLOOR) -> np.ndarray:
    """Read, resample and transform one file (steps 1-3 of the module docstring)."""
    rate, samples = read_wav(path)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate)
        samples = scipy.signal.resample_poly(samples, ratio.numerator, ratio.denominator)
    features = log_spectrogram(samples, window, hop, log_floor)
    if len(features) < 2:
        raise DataFormatError(f"{path}: too short ({len(samples)} samples at {sample_rate} Hz); "
                              f"next-frame prediction needs at least {window + hop} samples")
    return features


def find_split_files(root: Path, exclude_sa: bool = True) -> dict[str, list[Path]]:
    """The WAV files of each split directory (see the module docstring for the layout)."""
    subdirectories = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    files, problems = {}, []
    for split, names in SPLIT_NAMES.items():
        directory = next((subdirectories[n] for n in names if n in subdirectories), None)
        if directory is None:
            problems.append(f"no directory {' or '.join(names)} in {root}")
            continue
        found = sorted(p for p in directory.rglob("*") if p.suffix.lower() == ".wav"
                       and p.is_file() and not (exclude_sa and p.stem.upper() in ("SA1", "SA2")))
        if not found:
            problems.append(f"no .wav files under {directory}")
        files[split] = found
    if problems:
        raise MissingDataError(f"task 'timit': {'; '.join(problems)}. {HELP}")
    return files


def timit_task(data_dir: str | os.PathLike | None = None, exclude_sa: bool = True,
               sample_rate: int = SAMPLE_RATE, window: int = WINDOW, hop: int = HOP,
               log_floor: float = LOG_FLOOR) -> SequenceTask:
    """TIMIT next-frame log-magnitude prediction (see the module docstring)."""
    sample_rate = check_int("task option sample_rate", sample_rate)
    window = check_int("task option window", window, 2)
    hop = check_int("task option hop", hop)
    files = find_split_files(resolve_data_dir(data_dir, "timit", HELP), exclude_sa)
    features = {split: [utterance_features(p, sample_rate, window, hop, log_floor) for p in paths]
                for split, paths in files.items()}
    bins = window // 2 + 1
    total, sum_, sum_sq = 0, np.zeros(bins), np.zeros(bins)
    for utterance in features["train"]:
        total += len(utterance)
        sum_ += utterance.sum(axis=0, dtype=np.float64)
        sum_sq += np.square(utterance, dtype=np.float64).sum(axis=0)
    mean = sum_ / total
    std = np.sqrt(np.maximum(sum_sq / total - mean**2, 0.0))
    std = np.where(std > 1e-8, std, 1.0)

    def dataset(split):
        return NextFrameDataset([torch.from_numpy(((u - mean) / std).astype(np.float32))
                                 for u in features[split]])

    splits = {split: dataset(split) for split in files}
    longest = max(int(d.lengths.max()) for d in splits.values())
    return SequenceTask(
        name="timit", **splits, input_size=bins, output_size=bins, sequence_length=longest,
        kind="sequence-regression",
        description=(f"TIMIT next-frame prediction: {sample_rate} Hz, STFT Hann {window} / hop "
                     f"{hop}, log-magnitude normalized per bin; up to {longest} steps"),
        info={"mean": mean.tolist(), "std": std.tolist(),
              "files": {split: len(paths) for split, paths in files.items()}},
    )
