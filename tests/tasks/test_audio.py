"""timit on a synthetic WAV set written here with scipy.io.wavfile."""

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import torch

from stablernn.tasks import DataFormatError, MissingDataError, get_batch, load_task
from stablernn.tasks.audio import log_spectrogram, utterance_features


def tone(frequency, seconds, rate, amplitude=0.3, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return amplitude * np.sin(2 * np.pi * frequency * t) + noise


def write(path, samples, rate, dtype=np.int16):
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype == np.int16:
        samples = np.round(samples * 32767).astype(np.int16)
    else:
        samples = samples.astype(dtype)
    scipy.io.wavfile.write(path, rate, samples)


def write_timit(root):
    """train: 3 utterances at 16 kHz (+ an SA1 sentence); valid: 8 kHz float; test: stereo."""
    write(root / "train" / "dr1" / "fcjf0" / "si1027.wav", tone(500, 0.30, 16000), 16000)
    write(root / "train" / "dr1" / "fcjf0" / "sx127.wav", tone(1000, 0.25, 16000, seed=1), 16000)
    write(root / "train" / "dr2" / "mdab0" / "SI1039.WAV", tone(2000, 0.40, 16000, seed=2), 16000)
    write(root / "train" / "dr2" / "mdab0" / "sa1.wav", tone(3000, 0.2, 16000), 16000)
    write(root / "valid" / "a.wav", tone(1000, 0.2, 8000, seed=3), 8000, dtype=np.float32)
    stereo = np.stack([tone(750, 0.3, 16000, seed=4), tone(750, 0.3, 16000, seed=5)], axis=1)
    write(root / "TEST" / "b.wav", stereo, 16000)


def frames_for(samples):
    return 1 + -(-max(samples - 256, 0) // 128)


def test_preprocessing_normalization_and_next_frame_targets(tmp_path):
    write_timit(tmp_path)
    task = load_task("timit", data_dir=tmp_path)
    assert task.kind == "sequence-regression" and task.per_step
    assert task.input_size == task.output_size == 129
    assert (len(task.train), len(task.validation), len(task.test)) == (3, 1, 1)  # SA1 skipped
    # 16 kHz files resampled to 8 kHz; L frames give L - 1 steps
    lengths = sorted(task.train.lengths.tolist())
    assert lengths == sorted(frames_for(n) - 1 for n in (2400, 2000, 3200))
    assert task.validation.lengths.tolist() == [frames_for(1600) - 1]
    assert task.sequence_length == max(lengths)
    # normalized per bin with the training frames' statistics
    frames = torch.cat(task.train.sequences)
    np.testing.assert_allclose(frames.mean(dim=0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(frames.std(dim=0, unbiased=False).numpy(), 1, atol=1e-3)
    mean, std = np.array(task.info["mean"]), np.array(task.info["std"])
    raw = utterance_features(tmp_path / "valid" / "a.wav")
    torch.testing.assert_close(task.validation.sequences[0],
                               torch.from_numpy(((raw - mean) / std).astype(np.float32)))
    # batches: padded, masked, target at step t = input at step t + 1
    batch = get_batch(task.train, torch.arange(3))
    assert batch.inputs.shape == (3, max(lengths), 129) and batch.mask.dtype == torch.bool
    for row in range(3):
        steps = int(batch.mask[row].sum())
        assert steps == task.train.lengths[row]
        torch.testing.assert_close(batch.targets[row, :steps - 1], batch.inputs[row, 1:steps])
        assert not batch.mask[row, steps:].any()
        assert torch.equal(batch.inputs[row, steps:], torch.zeros_like(batch.inputs[row, steps:]))
    with pytest.raises(TypeError, match="get_batch"):
        task.train.tensors  # noqa: B018
    assert load_task("timit", data_dir=tmp_path, exclude_sa=False).train.lengths.numel() == 4


def test_spectrogram_hann_256_hop_128_log_magnitude():
    rate = 8000
    samples = tone(1000, 0.5, rate)
    spectrum = log_spectrogram(samples)
    assert spectrum.shape == (frames_for(len(samples)), 129)
    assert np.all(spectrum[2:-2].argmax(axis=1) == 32)  # 1000 Hz = bin 1000 / 8000 * 256
    frame = samples[128:384] * scipy.signal.get_window("hann", 256)
    want = 10 * np.log10(np.abs(np.fft.rfft(frame)) ** 2 + 1e-5)
    np.testing.assert_allclose(spectrum[1], want, rtol=1e-4, atol=1e-3)
    # resampling: the same tone read at 16 kHz gives nearly the same 8 kHz spectrum
    at16 = scipy.signal.resample_poly(tone(1000, 0.5, 16000), 1, 2)
    assert np.abs(log_spectrogram(at16)[2:-2, 32] - spectrum[2:-2, 32]).max() < 1.0


def test_nist_sphere_and_truncated_files_raise_naming_the_file(tmp_path):
    write_timit(tmp_path)
    sphere = tmp_path / "train" / "dr1" / "fcjf0" / "sx127.wav"
    sphere.write_bytes(b"NIST_1A\n   1024\nsample_rate -i 16000\nend_head\n" + bytes(2000))
    with pytest.raises(DataFormatError, match="NIST SPHERE.*sox.*sph2pipe") as error:
        load_task("timit", data_dir=tmp_path)
    assert str(sphere) in str(error.value)
    write(sphere, tone(1000, 0.25, 16000), 16000)
    truncated = tmp_path / "valid" / "a.wav"
    truncated.write_bytes(truncated.read_bytes()[:3000])
    with pytest.raises(DataFormatError, match="truncated WAV") as error:
        load_task("timit", data_dir=tmp_path)
    assert str(truncated) in str(error.value)


def test_missing_splits_say_what_where_and_how(tmp_path):
    write_timit(tmp_path)
    for path in (tmp_path / "valid").iterdir():
        path.unlink()
    (tmp_path / "valid").rmdir()
    with pytest.raises(MissingDataError) as error:
        load_task("timit", data_dir=tmp_path)
    for part in ("no directory valid or validation or dev", "LDC", "NIST SPHERE", "sox",
                 "--data-dir"):
        assert part in str(error.value)
