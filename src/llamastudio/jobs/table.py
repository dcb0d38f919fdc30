"""The table of jobs: records under one lock, persisted through the store's writer thread,
published as typed events. Reads and reports (progress, log lines, a handle's end) are safe from
any thread; nothing done under the lock blocks (database writes and log files go to the writer
thread, the bus hands events to the loop). Scheduling lives in :mod:`llamastudio.jobs.manager`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from llamastudio.errors import Conflict, InvalidInput, NotFound
from llamastudio.events import EventBus
from llamastudio.jobs.events import JobChanged, JobLog, JobProgress, JobRemoved
from llamastudio.jobs.logs import JobLogs
from llamastudio.jobs.model import FINISHED, Job, JobDetail, JobState, check_move
from llamastudio.jobs.policy import completed, expired, merged
from llamastudio.jobs.record import JobRecord, utcnow
from llamastudio.jobs.runner import JobKind
from llamastudio.jobs.store import JobStore, to_values
from llamastudio.store import Database


class JobTable:
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

    # -- reports from contexts and handles (any thread) ----------------------------------------
    def report_progress(
        self, rec: JobRecord, done: float, total: float | None, unit: str | None, message: str | None
    ) -> None:
        with self._lock:
            if rec.detached or rec.state != JobState.RUNNING:
                return
            old = rec.progress
            new = rec.progress = merged(old, done, total, unit, message)
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

    def remove(self, job_id: str, kinds: Collection[str] | None = None) -> Job:
        """Forget a finished job (done, failed or cancelled) and its log file; ``job.removed``
        tells the UI. A job still queued, running or paused is refused (cancel it first)."""
        with self._lock:
            rec = self._find(job_id, kinds)
            if rec.state not in FINISHED:
                raise Conflict(f"job {job_id} is {rec.state.value}: only finished jobs can be cleared")
            job = self._snap(rec)
            self._remove(rec)
            return job

    def clear(self, kinds: Collection[str]) -> tuple[Job, ...]:
        """Forget every finished job of ``kinds``; returns them."""
        with self._lock:
            done = [r for r in self._jobs.values() if r.kind in kinds and r.state in FINISHED]
            jobs = tuple(self._snap(r) for r in done)
            for rec in done:
                self._remove(rec)
            return jobs

    # -- internals (under the lock) ------------------------------------------------------
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

    def _settle(
        self, rec: JobRecord, state: JobState, error: str | None, result: dict[str, Any] | None
    ) -> None:
        fields: dict[str, Any] = {"error": error}
        if result is not None:
            fields["result"] = dict(result)
        if state == JobState.DONE:
            fields["progress"] = completed(rec.progress)
        self._move(rec, state, **fields)
        self._prune(rec.kind)

    def _prune(self, kind_name: str) -> None:
        kind = self._kinds.get(kind_name)
        keep = kind.retain if kind is not None else 100
        for rec in expired((r for r in self._jobs.values() if r.kind == kind_name), keep):
            self._remove(rec)

    def _remove(self, rec: JobRecord) -> None:
        self._jobs.pop(rec.id, None)
        self.store.delete([rec.id])
        self.logs.forget(rec.id, delete=True)
        self.bus.publish(JobRemoved(rec.id, rec.kind).to_json())
