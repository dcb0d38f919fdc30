"""The job manager: one table of jobs (persisted), a queue and a concurrency limit per kind,
runners started as tasks, stop requests, restart recovery, and the events that tell the faces.

Threads and the loop:
- ``submit``, ``track``, ``cancel``, ``pause``, ``resume``, ``start`` and ``close`` run on the
  event loop (they start tasks or set asyncio events).
- Reads (``get``, ``list``) and reports (progress, log lines, a handle's end) are safe from any
  thread: one lock guards the table; nothing under it blocks (database writes and log files go to
  the store's writer thread; the bus hands events to the loop).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from llamastudio.errors import Conflict, InvalidInput, NotFound, StudioError
from llamastudio.events import EventBus
from llamastudio.jobs.events import JobChanged, JobLog, JobProgress, JobRemoved
from llamastudio.jobs.logs import JobLogs
from llamastudio.jobs.model import ACTIVE, FINISHED, Job, JobDetail, JobState, Progress, check_move
from llamastudio.jobs.record import JobRecord, utcnow
from llamastudio.jobs.runner import JobContext, JobHandle, JobKind, Recovery, Runner, error_text
from llamastudio.jobs.store import JobStore, to_values
from llamastudio.store import Database

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted by a restart"


class JobManager:
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
        self.bus = bus
        self.store = JobStore(db)
        self.logs = JobLogs(log_dir, self.store.run)
        self._clock = clock
        self.progress_interval = progress_interval  # seconds between progress events of one job
        self.save_interval = save_interval  # seconds between progress writes of one job
        self._lock = threading.RLock()
        self._kinds: dict[str, JobKind] = {}
        self._jobs: dict[str, JobRecord] = {r.id: r for r in self.store.load()}
        # left queued or running by a previous run: settled by their kind's recovery in start()
        self._stale = [r.id for r in self._jobs.values() if r.state in ACTIVE]
        self._queues: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._running: dict[str, set[str]] = collections.defaultdict(set)
        self._runners: dict[str, Runner] = {}  # runners brought by submit (this process only)
        self._started = self._closed = False

    def register(self, kind: JobKind) -> None:
        self._kinds[kind.name] = kind

    # -- reads (any thread) --------------------------------------------------------------------
    def get(self, job_id: str, kinds: Collection[str] | None = None) -> Job:
        with self._lock:
            return self._snap(self._find(job_id, kinds))

    def list(
        self,
        kinds: Collection[str] | None = None,
        states: Collection[str] | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Newest first."""
        with self._lock:
            recs = [
                r
                for r in self._jobs.values()
                if (not kinds or r.kind in kinds) and (not states or r.state in states)
            ]
            recs.sort(key=lambda r: r.created_at, reverse=True)
            return [self._snap(r) for r in recs[:limit]]

    def detail(self, job_id: str, tail: int = 200, kinds: Collection[str] | None = None) -> JobDetail:
        """A job with its last ``tail`` log lines (may read the log file: call off the loop)."""
        job = self.get(job_id, kinds)
        lines = self.logs.tail(job.id, tail, job.log_lines)
        return JobDetail(**job.model_dump(), log=lines)

    def log_text(self, job_id: str, kinds: Collection[str] | None = None) -> str:
        """The whole log (reads the file: call off the loop)."""
        job = self.get(job_id, kinds)
        self.logs.flush()
        return "".join(f"{line}\n" for line in self.logs.read(job.id))

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
                    rec.stop.set()
                    if rec.cancel is not None:
                        rec.cancel.set()
                    tasks.append(rec.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.store.run(self.logs.flush)
        await asyncio.to_thread(self.store.close)

    # -- reports from contexts and handles (any thread) ----------------------------------------
    def report_progress(
        self, rec: JobRecord, done: float, total: float | None, unit: str | None, message: str | None
    ) -> None:
        with self._lock:
            if rec.detached or rec.state != JobState.RUNNING:
                return
            old = rec.progress
            new = Progress(
                done=done,
                total=old.total if total is None else total,
                unit=old.unit if unit is None else unit,
                message=old.message if message is None else message,
            )
            rec.progress = new
            now = self._clock()
            urgent = new.message != old.message or new.unit != old.unit or new.fraction == 1.0
            if not urgent and now - rec.last_event < self.progress_interval:
                return
            rec.last_event = now
            rate, eta = rec.rate(now)
            self.bus.publish(JobProgress(rec.id, rec.kind, new, rate, eta).to_json())
            if now - rec.last_saved >= self.save_interval:
                rec.last_saved = now
                self.store.save(to_values(rec))

    def report_log(self, rec: JobRecord, line: str) -> None:
        with self._lock:
            if rec.detached or rec.state != JobState.RUNNING:
                return
            self._log(rec, line)

    def report_end(
        self, rec: JobRecord, state: JobState, error: str | None, result: dict[str, Any] | None
    ) -> None:
        with self._lock:
            if rec.detached or rec.state != JobState.RUNNING:
                return  # ended already: a handle ends once
            if error and state == JobState.FAILED:
                self._log(rec, f"error: {error}")
            self._settle(rec, state, error, result)

    # -- internals (under the lock unless said otherwise) --------------------------------------
    def _kind(self, name: str) -> JobKind:
        kind = self._kinds.get(name)
        if kind is None:
            raise InvalidInput(f"no job kind {name!r}")
        return kind

    def _find(self, job_id: str, kinds: Collection[str] | None = None) -> JobRecord:
        rec = self._jobs.get(job_id)
        if rec is None or (kinds and rec.kind not in kinds):
            raise NotFound(f"no job {job_id!r}")
        return rec

    def _snap(self, rec: JobRecord) -> Job:
        kind = self._kinds.get(rec.kind)
        return rec.snapshot(
            cancellable=not rec.tracked or rec.on_cancel is not None,
            pausable=bool(kind and kind.pausable),
            resumable=bool(kind and kind.runner),
            now=self._clock(),
        )

    def _changed(self, rec: JobRecord) -> None:
        rec.updated_at = utcnow()
        self.store.save(to_values(rec))
        self.bus.publish(JobChanged(self._snap(rec)).to_json())

    def _move(self, rec: JobRecord, state: JobState, **fields: Any) -> None:
        check_move(rec.id, rec.state, state)
        rec.state = state
        for name, value in fields.items():
            setattr(rec, name, value)
        if state == JobState.RUNNING:
            rec.started_at = utcnow()
        elif state in FINISHED:
            rec.finished_at = utcnow()
            self.logs.forget(rec.id)  # the file keeps every line; the ring was for live views
        self._changed(rec)

    def _log(self, rec: JobRecord, line: str) -> None:
        rec.log_lines += 1
        self.logs.append(rec.id, line)
        self.bus.publish(JobLog(rec.id, rec.kind, line, rec.log_lines).to_json())

    def _request_stop(self, rec: JobRecord, what: JobState) -> None:
        rec.requested = what
        rec.stop.set()
        if rec.cancel is not None:
            rec.cancel.set()

    def _settle(
        self, rec: JobRecord, state: JobState, error: str | None, result: dict[str, Any] | None
    ) -> None:
        fields: dict[str, Any] = {"error": error}
        if result is not None:
            fields["result"] = dict(result)
        if state == JobState.DONE:
            p = rec.progress
            total = p.total or max(p.done, 1.0)
            fields["progress"] = Progress(done=total, total=total, unit=p.unit, message="")
        self._move(rec, state, **fields)
        self._prune(rec.kind)

    def _recover(self, rec: JobRecord) -> None:
        kind = self._kinds.get(rec.kind)
        policy = kind.recovery if kind is not None else Recovery.FAIL
        if policy == Recovery.RESUME and kind is not None and kind.runner is not None:
            if rec.state == JobState.RUNNING:
                self._move(rec, JobState.QUEUED)
            self._queues[rec.kind].append(rec.id)
        elif policy == Recovery.DROP:
            self._remove(rec)
        else:
            self._log(rec, f"error: {INTERRUPTED}")
            self._move(rec, JobState.FAILED, error=INTERRUPTED)

    def _prune(self, kind_name: str) -> None:
        kind = self._kinds.get(kind_name)
        keep = kind.retain if kind is not None else 100
        done = [r for r in self._jobs.values() if r.kind == kind_name and r.state in FINISHED]
        done.sort(key=lambda r: r.created_at)
        for rec in done[: max(0, len(done) - keep)]:
            self._remove(rec)

    def _remove(self, rec: JobRecord) -> None:
        self._jobs.pop(rec.id, None)
        self._runners.pop(rec.id, None)
        self.store.delete([rec.id])
        self.logs.forget(rec.id, delete=True)
        self.bus.publish(JobRemoved(rec.id, rec.kind).to_json())

    def _dispatch(self) -> None:
        """Start queued jobs while their kind has a free slot (on the loop)."""
        if self._closed:
            return
        with self._lock:
            for name, queue in self._queues.items():
                kind = self._kinds.get(name)
                limit = kind.concurrency if kind is not None else 1
                while queue and (limit is None or len(self._running[name]) < limit):
                    rec = self._jobs.get(queue.popleft())
                    if rec is None or rec.state != JobState.QUEUED:
                        continue  # paused or cancelled while it waited
                    runner = self._runners.get(rec.id) or (kind.runner if kind is not None else None)
                    if runner is None:
                        self._settle(rec, JobState.FAILED, f"{name} jobs cannot be restarted", None)
                        continue
                    self._launch(rec, runner)

    def _launch(self, rec: JobRecord, runner: Runner) -> None:
        rec.reset_run(self._clock())
        self._move(rec, JobState.RUNNING, error=None, finished_at=None)
        self._running[rec.kind].add(rec.id)
        ctx = JobContext(self, rec)
        rec.task = asyncio.get_running_loop().create_task(self._run(rec, runner, ctx), name=f"job-{rec.id}")

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
