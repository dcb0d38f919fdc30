"""Writing files the one safe way: a temporary file in the same directory, then one rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from llamastudio.errors import StorageError


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of it; ``mode`` applies from the start."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
