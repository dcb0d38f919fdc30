"""Job logs: the last lines of each job in memory (a bounded ring, for live views) and every line
appended to ``<dir>/<job id>.log`` (so a job's log survives a restart).

``append`` may be called from any thread and does no I/O: lines wait in a buffer that one write
on the store's writer thread flushes. A file stops growing at ``max_bytes`` (a marker line says
so); the ring keeps going.
"""

from __future__ import annotations

import collections
import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path

MAX_LINE = 4000
TRUNCATED = "[log truncated: the file reached its size limit]"
_ID = re.compile(r"^[0-9a-f]{8,36}$")


class JobLogs:
    def __init__(
        self,
        root: Path,
        run: Callable[[Callable[[], None]], None],
        ring: int = 2000,
        max_bytes: int = 16 << 20,
    ) -> None:
        self.root = root
        self._run = run  # queues work on the writer thread
        self.ring_size = ring
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._io = threading.Lock()  # one flush at a time: lines reach the file in order
        self._rings: dict[str, collections.deque[str]] = {}
        self._pending: dict[str, list[str]] = {}
        self._flush_queued = False

    def path(self, job_id: str) -> Path:
        """``<id>.log``; an id that is not plain hex (a row written by hand) is hashed first."""
        name = job_id if _ID.match(job_id) else hashlib.sha256(job_id.encode()).hexdigest()[:32]
        return self.root / f"{name}.log"

    def append(self, job_id: str, line: str) -> None:
        line = line.rstrip("\r\n")[:MAX_LINE]
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is None:
                ring = self._rings[job_id] = collections.deque(maxlen=self.ring_size)
            ring.append(line)
            self._pending.setdefault(job_id, []).append(line)
            if self._flush_queued:
                return
            self._flush_queued = True
        self._run(self.flush)

    def tail(self, job_id: str, n: int, total: int) -> list[str]:
        """The last ``n`` of the job's ``total`` lines: from memory when it holds them, else from
        the file (blocking: call from a thread or a sync route)."""
        if n <= 0:
            return []
        with self._lock:
            ring = self._rings.get(job_id)
            if ring is not None and len(ring) >= min(n, total):
                return list(ring)[-n:]
        self.flush()
        return self.read(job_id)[-n:]

    def read(self, job_id: str) -> list[str]:
        """Every line in the job's file (blocking)."""
        with self._io:  # not while a flush appends to it
            try:
                with open(self.path(job_id), encoding="utf-8", errors="replace") as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []

    def forget(self, job_id: str, delete: bool = False) -> None:
        """Drop the ring (the file stays), or everything (``delete``: the job is removed)."""
        with self._lock:
            self._rings.pop(job_id, None)
            if delete:
                self._pending.pop(job_id, None)
        if delete:
            self._run(lambda: self.path(job_id).unlink(missing_ok=True))

    def flush(self) -> None:
        """Write the buffered lines (blocking; on the writer thread, or before reading a file)."""
        with self._io:
            with self._lock:
                pending, self._pending = self._pending, {}
                self._flush_queued = False
            if pending:
                self.root.mkdir(parents=True, exist_ok=True)
            for job_id, lines in pending.items():
                self._write(self.path(job_id), lines)

    def _write(self, path: Path, lines: list[str]) -> None:
        size = path.stat().st_size if path.exists() else 0
        if size >= self.max_bytes:
            return
        data = "".join(f"{line}\n" for line in lines).encode("utf-8", errors="replace")
        if size + len(data) > self.max_bytes:
            data = data[: max(0, self.max_bytes - size)]
            data = data[: data.rfind(b"\n") + 1] + f"{TRUNCATED}\n".encode()
        with open(path, "ab") as f:
            f.write(data)
