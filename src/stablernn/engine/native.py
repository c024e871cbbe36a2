"""The native (C++) kernels: compiled on first use, cached on disk, optional.

:func:`load` compiles ``stablernn/engine/csrc/kernels.cpp`` (:data:`SOURCE`) with
``torch.utils.cpp_extension.load_inline`` the first time a process needs it (about 35-60 s on a
2-core machine), into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``); later processes load the cached library in well under a second.
A process about to compile says so first, in one line on stderr (:func:`announce_compile`).
Processes that start together build once, one after another, and a build killed halfway
never blocks a later one (:func:`build_lock`).
The library's name carries a hash of the source and of the torch version, so a changed source or
torch rebuilds instead of loading a stale binary.

When no C++ compiler is found, compilation fails, or ``STABLERNN_ENGINE_NATIVE=0`` is set, the
engine runs its pure-PyTorch path instead (same maths, same results to rounding) and says so once
in the ``stablernn.engine`` log. :func:`backend_for` tells which path a given tensor takes.

Environment:

- ``STABLERNN_ENGINE_NATIVE=0``: never compile or load the native kernels.
- ``STABLERNN_ENGINE_CACHE_MB`` (default 1024): how much freed memory the native kernels keep
  for reuse (see :func:`empty_cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import torch

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

SOURCE_FILE = Path(__file__).resolve().parent / "csrc" / "kernels.cpp"
SOURCE = SOURCE_FILE.read_text()

log = logging.getLogger("stablernn.engine")

BACKENDS = ("native", "python")
_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "module": None, "reason": None, "forced": None,
                          "announced": False}  # announced: the compile notice was printed


def _disabled_by_env() -> bool:
    value = os.environ.get("STABLERNN_ENGINE_NATIVE", "1").strip().lower()
    return value in ("0", "false", "no", "off")


def _compiler() -> str | None:
    return (shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
            or shutil.which("clang++"))


PORTABLE_FLAG = "-DSTABLERNN_PORTABLE"


def _flag_sets() -> list[list[str]]:
    """Compiler flags to try, best first. With OpenMP, as torch itself is built on Linux: without
    it, ATen's ``parallel_for`` compiled into the extension runs its chunks one after another on
    the calling thread (correct, but the kernels then use one core). ``-fno-trapping-math`` lets
    GCC vectorize the elementwise loops (the clamps in ``tanh_fast`` and the activations are
    branches otherwise: 5x slower); results are bit-for-bit the same, only the floating-point
    exception flags, which nothing reads, may differ."""
    openmp = (sys.platform.startswith("linux")
              and "parallel backend: OpenMP" in torch.__config__.parallel_info())
    optimize = ["-O3", "-fno-trapping-math"]
    flag_sets = [[*optimize, "-fopenmp"], optimize] if openmp else [optimize]
    # last resort: one portable build, without x86 function multi-versioning
    return [*flag_sets, [*flag_sets[-1], PORTABLE_FLAG]]


def extension_name(flags: list[str] | None = None) -> str:
    flags = _flag_sets()[0] if flags is None else flags
    key = SOURCE + torch.__version__ + " ".join(flags)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return f"stablernn_engine_{digest}"


def _cache_limit_bytes() -> int:
    text = os.environ.get("STABLERNN_ENGINE_CACHE_MB", "1024")
    try:
        return max(0, int(float(text) * 2**20))
    except ValueError:
        log.warning("STABLERNN_ENGINE_CACHE_MB=%r is not a number; using 1024", text)
        return 1024 * 2**20


COMPILE_NOTICE = ("stablernn: compiling native kernels (first use, about 30-60 s; cached "
                  "afterwards in {})")


def build_directory(name: str) -> str:
    """Where the build of ``name`` lives: ``<root>/py<version>_cpu/<name>`` with ``root``
    ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions`` (``$XDG_CACHE_HOME`` respected),
    the layout of torch's own extension cache; passed to the build explicitly, so it is always
    where the build happens."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions")
    version = f"py{sys.version_info.major}{sys.version_info.minor}_cpu"
    return os.path.join(root, version, name)


def is_cached(name: str) -> bool:
    """Whether a built library of ``name`` is in the cache (then the build only loads it, in
    well under a second)."""
    return os.path.isfile(os.path.join(build_directory(name), f"{name}.so"))


# Without flock (not POSIX), a lock this old was left by a process that died (or was killed)
# while it held torch's build lock; a build takes about a minute.
STALE_LOCK_SECONDS = 600


def remove_stale_lock(name: str, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove torch's build lock of ``name`` when it is older than ``max_age`` seconds (its
    holder died); True when one was removed."""
    lock = os.path.join(build_directory(name), "lock")
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:  # no lock
        return False
    if age < max_age:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.remove(lock)
    log.warning("stablernn engine: removed a stale build lock (%s, %.0f s old): the process "
                "that held it did not finish", lock, age)
    return True


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Hold the build directory of ``name`` for this process.

    torch's build lock is a plain file (``lock``): a process killed while it holds it leaves the
    file, and every later build or load of the same library waits on it forever (seen: a CI run
    hung an hour behind a lock a killed process had left minutes before). So stablernn takes an
    OS lock first, ``flock`` on ``build.lock`` beside it, which the kernel releases when its
    holder ends, however it ends. Every stablernn process takes torch's lock only while it holds
    this one, so a ``lock`` found while holding it was left by a process that died: it is removed,
    whatever its age. Without ``fcntl`` (not POSIX), locks older than
    :data:`STALE_LOCK_SECONDS` are removed instead."""
    directory = build_directory(name)
    os.makedirs(directory, exist_ok=True)
    if fcntl is None:
        remove_stale_lock(name)
        yield
        return
    with open(os.path.join(directory, "build.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits while another process builds or loads
        try:
            remove_stale_lock(name, max_age=0.0)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def announce_compile(name: str, stream: Any = None) -> bool:
    """Print :data:`COMPILE_NOTICE` (one line, to ``stream``, default stderr) when ``name`` is
    about to be compiled, i.e. its library is not cached; at most once per process. True when
    the notice was printed."""
    if _state.get("announced") or is_cached(name):
        return False
    _state["announced"] = True
    stream = sys.stderr if stream is None else stream
    print(COMPILE_NOTICE.format(build_directory(name)), file=stream, flush=True)
    return True


def _compile(flags: list[str]) -> Any:
    from torch.utils import cpp_extension

    name = extension_name(flags)
    link = [flag for flag in flags if flag == "-fopenmp"]
    with build_lock(name):
        announce_compile(name)
        return cpp_extension.load_inline(name, cpp_sources=[SOURCE], extra_cflags=flags,
                                         extra_ldflags=link, build_directory=build_directory(name),
                                         verbose=False)


def _build() -> tuple[Any, str | None]:
    if _disabled_by_env():
        return None, "disabled by STABLERNN_ENGINE_NATIVE=0"
    if _compiler() is None:
        return None, "no C++ compiler found (set CXX or install g++)"
    failures = []
    for flags in _flag_sets():
        try:
            module = _compile(flags)
        except Exception as error:  # any failure means: try the next flags, then the python path
            text = str(error).strip()
            failures.append(text.splitlines()[0] if text else type(error).__name__)
            continue
        if failures:
            what = "the portable build (no x86 multi-versioning)" if PORTABLE_FLAG in flags \
                else "a build without OpenMP: the kernels run on one thread"
            log.warning("stablernn engine: native kernels are %s (%s)", what, failures[0])
        break
    else:
        return None, f"native kernels failed to build or load: {failures[0]}"
    module.set_cache_limit(_cache_limit_bytes())
    return module, None


def load() -> Any:
    """The compiled kernels module, or ``None`` when the pure-PyTorch path must be used.

    Tried once per process; the outcome is logged once (``stablernn.engine``, INFO for native,
    WARNING for the fallback with its reason)."""
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                module, reason = _build()
                _state.update(module=module, reason=reason, tried=True)
                if module is not None:
                    log.info("stablernn engine: native C++ kernels loaded (%s)", extension_name())
                else:
                    log.warning("stablernn engine: using the pure-PyTorch path: %s", reason)
    return _state["module"]


def fallback_reason() -> str | None:
    """Why the native kernels are not in use (``None`` when they are, or were never tried)."""
    return _state["reason"]


def set_backend(name: str | None) -> None:
    """Force a backend for every later call: ``"native"`` (error if it cannot load),
    ``"python"`` (the pure-PyTorch path), or ``None`` (automatic: native where it applies)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {name!r}")
    if name == "native" and load() is None:
        raise RuntimeError(f"the native engine is not available: {fallback_reason()}")
    _state["forced"] = name


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """``with use_backend("python"): ...`` runs the block on that backend, then restores."""
    previous = _state["forced"]
    set_backend(name)
    try:
        yield
    finally:
        _state["forced"] = previous


def backend_for(*tensors: torch.Tensor) -> str:
    """``"native"`` when the native kernels handle these tensors (CPU, float32/float64, kernels
    available and not forced off), else ``"python"``."""
    if _state["forced"] == "python":
        return "python"
    native_ok = all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                    for t in tensors)
    if not native_ok:
        return "python"
    return "native" if load() is not None else "python"


def empty_cache() -> None:
    """Free the memory blocks the native kernels keep for reuse (no-op without them)."""
    module = _state["module"]
    if module is not None:
        module.empty_cache()


def cache_info() -> dict[str, int]:
    """Bytes cached and the limit, hits and misses of the native kernels' memory cache."""
    module = _state["module"]
    if module is None:
        return {"cached_bytes": 0, "limit_bytes": 0, "hits": 0, "misses": 0}
    cached, limit, hits, misses = module.cache_stats()
    return {"cached_bytes": cached, "limit_bytes": limit, "hits": hits, "misses": misses}
