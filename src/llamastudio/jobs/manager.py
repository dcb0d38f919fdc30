"""The job manager: the table of jobs (:mod:`llamastudio.jobs.table`) plus scheduling — a queue
and a concurrency limit per kind, runners started as tasks, stop requests (cancel, pause), restart
recovery per kind, and shutdown.

Threads and the loop: ``submit``, ``cancel``, ``pause``, ``resume``, ``start`` and ``close`` run
on the event loop (they start tasks and set asyncio events); reads, ``track`` and every report
(progress, log lines, a handle's end) are safe from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llamastudio.errors import Conflict, InvalidInput, StudioError
from llamastudio.events import EventBus
from llamastudio.jobs.model import ACTIVE, Job, JobState
from llamastudio.jobs.policy import free_slots, recovery
from llamastudio.jobs.record import JobRecord
from llamastudio.jobs.runner import JobContext, JobHandle, Recovery, Runner, error_text
from llamastudio.jobs.store import to_values
from llamastudio.jobs.table import JobTable
from llamastudio.store import Database

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted by a restart"


class JobManager(JobTable):
    def __init__(
        self,
        db: Database,
        bus: EventBus,
        log_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = 0.25,
        save_interval: float = 2.0,
    ) -> None:
        super().__init__(
            db, bus, log_dir, clock=clock, progress_interval=progress_interval, save_interval=save_interval
        )
        # left queued or running by a previous run: settled by their kind's recovery in start()
        self._stale = [r.id for r in self._jobs.values() if r.state in ACTIVE]
        self._queues: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._running: dict[str, set[str]] = collections.defaultdict(set)
        self._runners: dict[str, Runner] = {}  # runners brought by submit, until they start
        self._started = self._closed = False

    # -- actions (on the loop) -----------------------------------------------------------------
    async def start(self) -> None:
        """Settle what a previous run left queued or running, then start queued work."""
        if self._started:
            return
        self._started = True
        with self._lock:
            stale = [self._jobs[i] for i in self._stale if i in self._jobs]
            self._stale.clear()
            for rec in sorted(stale, key=lambda r: r.created_at):
                if rec.state in ACTIVE and rec.task is None and not rec.tracked:
                    self._recover(rec)
            for name in list(self._kinds):
                self._prune(name)
        self._dispatch()

    def submit(
        self, kind: str, title: str, params: dict[str, Any] | None = None, runner: Runner | None = None
    ) -> Job:
        """Queue a job (started at once when its kind has a free slot); ``runner`` defaults to the
        kind's."""
        spec = self._kind(kind)
        if runner is None and spec.runner is None:
            raise InvalidInput(f"{kind} jobs need a runner")
        if self._closed:
            raise Conflict("the studio is shutting down: no new jobs")
        rec = JobRecord(id=uuid.uuid4().hex[:16], kind=kind, title=title, state=JobState.QUEUED)
        rec.params = dict(params or {})
        with self._lock:
            self._jobs[rec.id] = rec
            if runner is not None:
                self._runners[rec.id] = runner
            self._changed(rec)
            self._queues[kind].append(rec.id)
        self._dispatch()
        return self.get(rec.id)

    def track(
        self,
        kind: str,
        title: str,
        params: dict[str, Any] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> JobHandle:
        """A running job whose work the caller does and reports through the handle. ``on_cancel``
        (called on the loop) makes it cancellable; the caller then ends it with ``cancelled()``."""
        self._kind(kind)
        rec = JobRecord(id=uuid.uuid4().hex[:16], kind=kind, title=title, state=JobState.RUNNING)
        rec.params, rec.tracked, rec.on_cancel = dict(params or {}), True, on_cancel
        rec.started_at = rec.created_at
        rec.reset_run(self._clock())
        if self._closed:  # shutting down: a handle whose reports go nowhere
            rec.detached = True
            return JobHandle(self, rec)
        with self._lock:
            self._jobs[rec.id] = rec
            self._changed(rec)
        return JobHandle(self, rec)

    def cancel(self, job_id: str) -> Job:
        callback: Callable[[], None] | None = None
        with self._lock:
            rec = self._find(job_id)
            if rec.state in (JobState.QUEUED, JobState.PAUSED) or (
                rec.state == JobState.RUNNING and rec.task is None and not rec.tracked
            ):
                self._move(rec, JobState.CANCELLED)
            elif rec.state == JobState.RUNNING and rec.tracked:
                if rec.on_cancel is None:
                    raise Conflict(f"job {job_id} ({rec.kind}) cannot be cancelled")
                callback = rec.on_cancel
            elif rec.state == JobState.RUNNING:
                self._request_stop(rec, JobState.CANCELLED)
            else:
                raise Conflict(f"job {job_id} is {rec.state.value}")
            job = self._snap(rec)
        if callback is not None:
            callback()
        return job

    def pause(self, job_id: str) -> Job:
        with self._lock:
            rec = self._find(job_id)
            if not self._kind(rec.kind).pausable:
                raise Conflict(f"{rec.kind} jobs cannot be paused")
            if rec.state == JobState.QUEUED or (rec.state == JobState.RUNNING and rec.task is None):
                self._move(rec, JobState.PAUSED)
            elif rec.state == JobState.RUNNING:
                self._request_stop(rec, JobState.PAUSED)
            else:
                raise Conflict(f"job {job_id} is {rec.state.value}")
            return self._snap(rec)

    def resume(self, job_id: str) -> Job:
        """Queue a paused, failed or cancelled job again (its kind's runner continues from its
        params)."""
        with self._lock:
            rec = self._find(job_id)
            if self._kind(rec.kind).runner is None:
                raise Conflict(f"{rec.kind} jobs cannot be resumed")
            if rec.state not in (JobState.PAUSED, JobState.FAILED, JobState.CANCELLED):
                raise Conflict(f"job {job_id} is {rec.state.value}")
            self._move(rec, JobState.QUEUED, error=None, finished_at=None)
            self._queues[rec.kind].append(rec.id)
        self._dispatch()
        return self.get(job_id)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop every runner (waiting up to ``timeout``) and finish the writes. Jobs still running
        stay so in the database: the next start's recovery settles them per kind."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[None]] = []
        with self._lock:
            for rec in self._jobs.values():
                if rec.state != JobState.RUNNING:
                    continue
                self.store.save(to_values(rec))  # the latest progress, for the resume
                rec.detached = True
                if rec.task is not None:
                    self._request_stop(rec, None)
                    tasks.append(rec.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.store.run(self.logs.flush)
        await asyncio.to_thread(self.store.close)

    # -- internals (under the lock unless said otherwise) --------------------------------------
    def _request_stop(self, rec: JobRecord, what: JobState | None) -> None:
        """Ask a running runner to stop: the thread flag now, the asyncio event on its loop."""
        rec.requested = what
        rec.stop.set()
        if rec.cancel is not None and rec.loop is not None:
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is rec.loop:
                rec.cancel.set()
            else:
                with contextlib.suppress(RuntimeError):  # its loop closed
                    rec.loop.call_soon_threadsafe(rec.cancel.set)

    def _recover(self, rec: JobRecord) -> None:
        policy = recovery(self._kinds.get(rec.kind))
        if policy == Recovery.RESUME:
            if rec.state == JobState.RUNNING:
                self._move(rec, JobState.QUEUED)
            self._queues[rec.kind].append(rec.id)
        elif policy == Recovery.DROP:
            self._remove(rec)
        else:
            self._log(rec, f"error: {INTERRUPTED}")
            self._move(rec, JobState.FAILED, error=INTERRUPTED)

    def _dispatch(self) -> None:
        """Start queued jobs while their kind has a free slot (on the loop)."""
        if self._closed:
            return
        with self._lock:
            for name, queue in self._queues.items():
                kind = self._kinds.get(name)
                limit = kind.concurrency if kind is not None else 1
                while queue and free_slots(limit, len(self._running[name])) != 0:
                    rec = self._jobs.get(queue.popleft())
                    if rec is None or rec.state != JobState.QUEUED:
                        continue  # paused or cancelled while it waited
                    runner = self._runners.pop(rec.id, None) or (kind.runner if kind is not None else None)
                    if runner is None:
                        self._settle(rec, JobState.FAILED, f"{name} jobs cannot be restarted", None)
                        continue
                    self._launch(rec, runner)

    def _launch(self, rec: JobRecord, runner: Runner) -> None:
        rec.reset_run(self._clock())
        rec.loop = asyncio.get_running_loop()
        self._move(rec, JobState.RUNNING, error=None, finished_at=None)
        self._running[rec.kind].add(rec.id)
        ctx = JobContext(self, rec)
        rec.task = rec.loop.create_task(self._run(rec, runner, ctx), name=f"job-{rec.id}")

    async def _run(self, rec: JobRecord, runner: Runner, ctx: JobContext) -> None:
        error: BaseException | None = None
        result: dict[str, Any] | None = None
        try:
            result = await runner(ctx)
        except asyncio.CancelledError:
            if not rec.detached:
                raise
        except Exception as exc:  # the job fails with it; the manager goes on
            error = exc
            if not isinstance(exc, StudioError):
                log.exception("job %s (%s) failed", rec.id, rec.kind)
        finally:
            with self._lock:
                self._running[rec.kind].discard(rec.id)
                rec.task = None
        with self._lock:
            if rec.detached or rec.state != JobState.RUNNING:
                return  # closing: the next start's recovery settles it
            if error is None:
                self._settle(rec, JobState.DONE, None, result or {})
            elif rec.requested is not None:
                self._settle(rec, rec.requested, None, None)
            else:
                message = error_text(error)
                self._log(rec, f"error: {message}")
                self._settle(rec, JobState.FAILED, message, None)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._dispatch()
