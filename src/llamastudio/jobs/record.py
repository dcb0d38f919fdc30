"""The manager's mutable record of one job, and the snapshot (:class:`Job`) it hands out.

Every field is read and written under the manager's lock; nothing outside ``jobs/`` sees a
record, only snapshots.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llamastudio.jobs.model import Job, JobState, Progress


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class JobRecord:
    id: str
    kind: str
    title: str
    state: JobState
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    progress: Progress = field(default_factory=Progress)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log_lines: int = 0

    # -- this process only (not persisted) -----------------------------------------------------
    stop: threading.Event = field(default_factory=threading.Event)  # seen by runner threads
    cancel: asyncio.Event | None = None  # the same request, for runners on the loop
    requested: JobState | None = None  # PAUSED or CANCELLED: what a stop request asked for
    task: asyncio.Task[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None  # where the runner runs (its cancel event's owner)
    tracked: bool = False  # reported by its owner (job handle), not run by the manager
    on_cancel: Any = None  # a tracked job's cancel callback (called on the loop)
    detached: bool = False  # the manager closed: late reports from threads are ignored
    run_started: float = 0.0  # monotonic, and progress.done then: the current run's rate
    run_done0: float = 0.0
    last_event: float = 0.0  # monotonic: progress events and saves are throttled
    last_saved: float = 0.0

    def reset_run(self, now: float) -> None:
        self.stop = threading.Event()
        self.cancel = asyncio.Event()
        self.requested = None
        self.run_started, self.run_done0 = now, self.progress.done

    def rate(self, now: float | None = None) -> tuple[float | None, float | None]:
        """(units per second in this run, seconds left) while running; (None, None) otherwise."""
        if self.state != JobState.RUNNING or not self.run_started:
            return None, None
        elapsed = (time.monotonic() if now is None else now) - self.run_started
        moved = self.progress.done - self.run_done0
        if elapsed <= 0 or moved <= 0:
            return None, None
        speed = moved / elapsed
        left = None if self.progress.total is None else max(0.0, self.progress.total - self.progress.done)
        return speed, (left / speed if left is not None else None)

    def snapshot(
        self, *, cancellable: bool, pausable: bool, resumable: bool, now: float | None = None
    ) -> Job:
        rate, eta = self.rate(now)
        return Job(
            id=self.id,
            kind=self.kind,
            title=self.title,
            state=self.state,
            progress=self.progress,
            rate=rate,
            eta_s=eta,
            error=self.error,
            params=dict(self.params),
            result=dict(self.result),
            created_at=self.created_at,
            updated_at=self.updated_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            log_lines=self.log_lines,
            cancellable=cancellable,
            pausable=pausable,
            resumable=resumable,
        )
