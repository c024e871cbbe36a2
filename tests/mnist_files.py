"""MNIST IDX files written in the exact standard format, small enough for tests."""

import gzip

import numpy as np

TRAIN, TEST = 60, 20


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x0000, type 0x08 (ubyte), ndim, big-endian int32 sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def images_for(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """28x28 images whose first two pixels encode the image's id; one pixel is 255."""
    images = rng.integers(0, 200, size=(len(ids), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = ids % 256
    images[:, 0, 1] = ids // 256
    images[:, 27, 27] = 255
    return images


def write_mnist(directory, gz: bool, prefix: str = "-"):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    train_ids, test_ids = np.arange(TRAIN), np.arange(1000, 1000 + TEST)
    files = {
        f"train-images{prefix}idx3-ubyte": images_for(train_ids, rng),
        f"train-labels{prefix}idx1-ubyte": (train_ids % 10).astype(np.uint8),
        f"t10k-images{prefix}idx3-ubyte": images_for(test_ids, rng),
        f"t10k-labels{prefix}idx1-ubyte": (test_ids % 10).astype(np.uint8),
    }
    for name, array in files.items():
        data = idx_bytes(array)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return files
