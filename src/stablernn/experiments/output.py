"""Where results go: checked for writability before any work starts, written atomically.

Every verb that writes (``train``, ``certify``, ``analyze``, ``reproduce``, ``sweep``,
``bench --json``) checks its output location first, so a read-only disk or a path that is a
file fails in a second with a message naming the argument, not after minutes of computing.
A write that has begun finishes before Ctrl-C takes effect (:func:`interrupts_deferred`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


class OutputLocationError(ValueError):
    """An output path that cannot be written: named with what was found and what was expected."""


def _nearest_existing(path: Path) -> Path:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def _probe(directory: Path, argument: str, path: Path) -> None:
    """Write and remove a file in ``directory`` (permission bits alone mislead: root, ACLs,
    read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".stablernn-probe-"):
            pass
    except OSError as error:
        raise OutputLocationError(
            f"{argument} {path}: cannot write in {directory} ({error.strerror}); expected a "
            "directory you can write to") from None


def check_writable_directory(path: str | os.PathLike, argument: str) -> Path:
    """Refuse ``path`` unless it is (or can be made as) a directory this process can write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputLocationError(f"{argument} {path} is a file; expected a directory (existing "
                                  "or to be created)")
    existing = _nearest_existing(path.absolute())
    if not existing.is_dir():
        raise OutputLocationError(f"{argument} {path}: {existing} is a file, so no directory can "
                                  "be made below it; expected a directory path")
    _probe(existing, argument, path)
    return path


def check_writable_file(path: str | os.PathLike, argument: str) -> Path:
    """Refuse ``path`` unless a file can be written there (its directory is created if needed)."""
    path = Path(path)
    if path.is_dir():
        raise OutputLocationError(f"{argument} {path} is a directory; expected a file name")
    existing = _nearest_existing(path.absolute().parent)
    if not existing.is_dir():
        raise OutputLocationError(f"{argument} {path}: {existing} is a file, so {path.name} "
                                  "cannot be written below it; expected a path in a directory")
    _probe(existing, argument, path)
    return path


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then deliver it as it would have been.

    A ``KeyboardInterrupt`` raised inside ``torch.save`` makes its zip writer fail on the way
    out with an unrelated ``RuntimeError`` (the interrupt and its message are lost), and an
    interrupt between two files of one checkpoint leaves them disagreeing; so the writes run to
    their end, then the interrupt is raised. Blocks nest. Only the main thread receives signals:
    elsewhere, and where Python does not own the SIGINT handler, the block runs as is."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    received: list[tuple[int, object]] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(*received[0])
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a file beside ``path``, then rename it over ``path``: an
    interruption leaves the old file or the new one, never half a file, and Ctrl-C waits for
    the write to end (:func:`interrupts_deferred`).

    The file gets the usual mode (0666 less the umask), like any file the process creates
    (``mkstemp``'s 0600 would make checkpoints unlike every other file of a run).
    """
    path = Path(path)
    with interrupts_deferred():
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temporary, default_file_mode())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomic` of a text (UTF-8)."""
    return write_atomic(path, lambda stream: stream.write(text.encode()))


def default_file_mode() -> int:
    """0666 less the process's umask (what ``open(path, "w")`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
