"""How work plugs into the job system: a :class:`JobKind` (limits, recovery, an optional runner
that can start a job from its params), the :class:`JobContext` a runner reports through, and the
:class:`JobHandle` of a job whose work runs elsewhere (a model load, run by the runtime).

Reports (``progress``, ``log``) may come from any thread; they never block on I/O.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol

from llamastudio.errors import StudioError
from llamastudio.jobs.model import JobState
from llamastudio.jobs.record import JobRecord


class Recovery(StrEnum):
    """What a restart does with a job the previous run left queued or running."""

    RESUME = "resume"  # queued again; the runner continues from its params (downloads)
    FAIL = "fail"  # failed, "interrupted by a restart" (builds, installs)
    DROP = "drop"  # removed (model loads: the process is gone, there is nothing to show)


Runner = Callable[["JobContext"], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``runner`` starts a job of this kind from its params (needed to resume
    after a pause or a restart); jobs may also bring their own runner when submitted."""

    name: str
    runner: Runner | None = None
    concurrency: int | None = 1  # jobs of this kind running at once; None: no limit
    recovery: Recovery = Recovery.FAIL
    pausable: bool = False  # the runner stops on request and a later run continues
    retain: int = 100  # finished jobs kept (with their logs); older ones are removed


class Owner(Protocol):
    """What contexts and handles report to (the manager)."""

    def report_progress(
        self, rec: JobRecord, done: float, total: float | None, unit: str | None, message: str | None
    ) -> None: ...

    def report_log(self, rec: JobRecord, line: str) -> None: ...

    def report_end(
        self, rec: JobRecord, state: JobState, error: str | None, result: dict[str, Any] | None
    ) -> None: ...


class JobContext:
    """Given to a runner: its job's params, the stop request, and where to report.

    A stop request (cancel, pause, shutdown) sets :attr:`stop` (for threads) and :attr:`cancel`
    (for coroutines); the runner should then return or raise soon. What it returns becomes the
    job's ``result``; what it raises, its error."""

    def __init__(self, owner: Owner, rec: JobRecord) -> None:
        self._owner, self._rec = owner, rec
        self.id, self.kind = rec.id, rec.kind
        self.params: dict[str, Any] = dict(rec.params)
        self.stop: threading.Event = rec.stop
        assert rec.cancel is not None
        self.cancel: asyncio.Event = rec.cancel

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def progress(
        self, done: float, total: float | None = None, message: str | None = None, unit: str | None = None
    ) -> None:
        """Report ``done`` of ``total`` (None: keep the last total) and, optionally, a message."""
        self._owner.report_progress(self._rec, done, total, unit, message)

    def log(self, line: str) -> None:
        self._owner.report_log(self._rec, line)


class JobHandle:
    """A job whose work runs elsewhere (``JobManager.track``): report progress and log lines, then
    end it once with :meth:`finish`, :meth:`fail` or :meth:`cancelled`. Later reports are ignored.

    As a context manager it fails the job with the exception that leaves the block and finishes
    it when the block ends normally (unless it was ended inside)."""

    def __init__(self, owner: Owner, rec: JobRecord) -> None:
        self._owner, self._rec = owner, rec
        self.id = rec.id

    @property
    def state(self) -> JobState:
        return self._rec.state

    def progress(
        self, done: float, total: float | None = None, message: str | None = None, unit: str | None = None
    ) -> None:
        self._owner.report_progress(self._rec, done, total, unit, message)

    def log(self, line: str) -> None:
        self._owner.report_log(self._rec, line)

    def finish(self, result: dict[str, Any] | None = None) -> None:
        self._owner.report_end(self._rec, JobState.DONE, None, result)

    def fail(self, error: str) -> None:
        self._owner.report_end(self._rec, JobState.FAILED, error, None)

    def cancelled(self, reason: str | None = None) -> None:
        self._owner.report_end(self._rec, JobState.CANCELLED, reason, None)

    def __enter__(self) -> JobHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, asyncio.CancelledError):
            self.cancelled("the caller stopped waiting")
        else:
            self.fail(error_text(exc))


def error_text(exc: BaseException) -> str:
    """What a job shows for an exception: a studio error's message, or the type of a bug."""
    if isinstance(exc, StudioError):
        return exc.message
    return f"internal error: {type(exc).__name__}: {exc}"
