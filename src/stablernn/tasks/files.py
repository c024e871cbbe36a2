"""Finding and reading data files that the user provides; the errors when they are wrong.

No task downloads anything. File-based tasks take a ``data_dir`` option (the command line's
``--data-dir``); when it is not given, the environment variable ``STABLERNN_DATA_DIR`` is used.
A missing file raises :class:`MissingDataError` (a FileNotFoundError) that says which files,
in which format, where to put them and how to fetch them elsewhere; a file that is there but
truncated or corrupted raises :class:`DataFormatError` (a ValueError) naming the file and what
was expected.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

DATA_DIR_VARIABLE = "STABLERNN_DATA_DIR"


class MissingDataError(FileNotFoundError):
    """Files a task needs are not where it looked; the message says how to provide them."""


class DataFormatError(ValueError):
    """A data file is there but is not in the expected format (truncated, corrupted, other)."""


def resolve_data_dir(data_dir: str | os.PathLike | None, task: str, help_text: str) -> Path:
    """The directory to read ``task``'s files from, or a :class:`MissingDataError`."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_VARIABLE) or None
    if data_dir is None:
        raise MissingDataError(
            f"task {task!r} reads its data from files: pass the directory that holds them "
            f"with --data-dir DIR (task option data_dir) or set {DATA_DIR_VARIABLE}. "
            f"{help_text}"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise MissingDataError(
            f"task {task!r}: data directory {path} does not exist or is not a directory. "
            f"{help_text}"
        )
    return path


def find_file(directories: Iterable[Path], names: Iterable[str]) -> Path | None:
    """The first ``directory / name`` that is a file (directories outer, names inner)."""
    names = list(names)
    for directory in directories:
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when it is gzipped (by content, not by name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise DataFormatError(f"{path}: expected a gzip file (.gz), but it does not start "
                                  "with the gzip magic bytes 1f 8b")
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataFormatError(
            f"{path}: truncated or corrupted gzip file ({error}); download it again"
        ) from None
