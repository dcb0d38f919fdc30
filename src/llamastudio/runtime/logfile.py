"""Engine log files: written with a size cap and rotation, read from the end.

A log (``<data>/logs/<model>.log``) grows to ``max_bytes`` (20 MiB), then becomes ``<model>.log.1``
(the previous ``.1`` becomes ``.2`` …; ``keep`` = 2 old files, older ones are deleted), so a
model's logs never take more than ``(keep + 1) × max_bytes`` on disk. Rotation happens between
lines: no line is split across two files.

Reading a tail seeks to the end and reads backwards in blocks until it has the lines asked for,
at most ``MAX_TAIL_BYTES`` in all: the cost is the tail's, not the file's. It blocks (file I/O):
callers on the event loop run it in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

MAX_BYTES = 20 << 20
KEEP = 2
MAX_TAIL = 5000  # lines one request may ask for
MAX_TAIL_BYTES = 16 << 20  # bytes one tail may read (5000 lines of ~3 KiB)
_BLOCK = 64 << 10


def rotated(path: Path, i: int) -> Path:
    """The ``i``-th older file of a log (``x.log.1`` is the newest of them); ``i = 0``: the log."""
    return path if i == 0 else path.with_name(f"{path.name}.{i}")


class RotatingLog:
    """An append-only log file of lines (bytes), rotated at ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._file: BinaryIO | None = None
        self._size = 0

    def __enter__(self) -> RotatingLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # closed by __exit__ / _rotate
        self._size = self._file.tell()
        if self._size >= self.max_bytes:  # left full by an earlier run
            self._rotate()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, lines: bytes) -> None:
        """Append whole lines, one or a block of them (flushed: readers see them at once); the file
        is rotated between two lines where the next would not fit. A line longer than a file is
        written whole, alone in its file."""
        assert self._file is not None, "use RotatingLog as a context manager"
        while lines:
            room = self.max_bytes - self._size
            cut = len(lines) if len(lines) <= room else lines.rfind(b"\n", 0, max(room, 0)) + 1
            if cut == 0:  # not even its next line fits
                if self._size:
                    self._rotate()
                    continue
                cut = lines.find(b"\n") + 1 or len(lines)  # longer than a file: alone
            self._file.write(lines[:cut])
            self._size += cut
            lines = lines[cut:]
        self._file.flush()

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        rotated(self.path, self.keep).unlink(missing_ok=True)
        for i in range(self.keep, 0, -1):
            older = rotated(self.path, i - 1)
            if older.exists():
                os.replace(older, rotated(self.path, i))
        self.path.unlink(missing_ok=True)  # keep = 0: no old file is kept
        self._file = open(self.path, "ab")  # noqa: SIM115 -- closed by __exit__ / the next rotation
        self._size = 0


def read_tail(f: BinaryIO, n: int, budget: int = MAX_TAIL_BYTES) -> tuple[list[str], int]:
    """The last ``n`` complete lines of an open file, reading backwards from its end; also the
    bytes read (never more than ``budget``)."""
    pos = f.seek(0, os.SEEK_END)
    chunks: list[bytes] = []
    newlines = used = 0
    while pos > 0 and newlines <= n and used < budget:
        step = min(_BLOCK, pos, budget - used)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        used += len(chunk)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    lines = b"".join(reversed(chunks)).decode(errors="replace").splitlines()
    if pos > 0 and lines:
        lines = lines[1:]  # began mid-line
    return lines[-n:] if n else [], used


def tail_lines(path: Path, n: int, keep: int = KEEP) -> list[str]:
    """The last ``n`` lines of a log, continuing into its rotated files when the current one has
    fewer; [] when there is no log."""
    out: list[str] = []
    budget = MAX_TAIL_BYTES
    for i in range(keep + 1):
        if len(out) >= n or budget <= 0:
            break
        try:
            with open(rotated(path, i), "rb") as f:
                lines, used = read_tail(f, n - len(out), budget)
        except FileNotFoundError:
            continue
        except OSError:
            break
        out = lines + out
        budget -= used
    return out[-n:]
