"""What code produced a result: package version, a hash of its sources, the git commit.

Every run records it (``results.json``, checkpoints), so a result can be traced to the code
that made it and ``stablernn reproduce`` can refuse to reuse runs made by other code.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[1]  # the stablernn package
SOURCE_SUFFIXES = (".py", ".cpp", ".h", ".cu")


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """SHA-256 (first 16 hex digits) over the package's source files, paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in SOURCE_SUFFIXES
                       and "__pycache__" not in p.parts):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``+dirty`` with local changes), or
    None for an installed copy."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def version() -> str:
    """The installed stablernn's version (``unknown`` for sources not installed)."""
    try:
        return metadata.version("stablernn")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance() -> dict[str, Any]:
    """``{"version", "source_hash", "commit"}`` of the running code."""
    return {"version": version(), "source_hash": source_hash(),
            "commit": git_commit()}
