"""Jobs in SQLite (table ``jobs``), written by one background thread so the loop never waits on
the database: writes are queued in order and run one at a time; :meth:`JobStore.drain` waits for
those queued so far. Reads happen once, when the manager is built (before serving)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from llamastudio.jobs.model import JobState, Progress
from llamastudio.jobs.record import JobRecord
from llamastudio.store import Database
from llamastudio.store.models import JobRow

log = logging.getLogger(__name__)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def to_record(row: JobRow) -> JobRecord:
    try:
        state = JobState(row.state)
    except ValueError:  # a state this version does not know: treat as interrupted
        state = JobState.FAILED
    return JobRecord(
        id=row.id,
        kind=row.kind,
        title=row.title,
        state=state,
        params=dict(row.params or {}),
        result=dict(row.result or {}),
        error=row.error,
        progress=Progress(
            done=row.progress_done or 0.0,
            total=row.progress_total,
            unit=row.progress_unit or "",
            message=row.message or "",
        ),
        created_at=_aware(row.created_at) or datetime.now(UTC),
        updated_at=_aware(row.updated_at) or datetime.now(UTC),
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        log_lines=row.log_lines or 0,
    )


def to_values(rec: JobRecord) -> dict[str, Any]:
    """The persisted fields of a record, copied (taken under the manager's lock)."""
    return {
        "id": rec.id,
        "kind": rec.kind,
        "state": rec.state.value,
        "title": rec.title[:512],
        "progress": rec.progress.fraction or (1.0 if rec.state == JobState.DONE else 0.0),
        "progress_done": rec.progress.done,
        "progress_total": rec.progress.total,
        "progress_unit": rec.progress.unit,
        "message": rec.progress.message,
        "params": dict(rec.params),
        "result": dict(rec.result),
        "error": rec.error,
        "log_lines": rec.log_lines,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "started_at": rec.started_at,
        "finished_at": rec.finished_at,
    }


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-writer")
        self._closed = False

    def load(self) -> list[JobRecord]:
        """Every stored job, oldest first (blocking: called once, before serving)."""
        with self.db.session() as s:
            return [to_record(r) for r in s.scalars(select(JobRow).order_by(JobRow.created_at))]

    def run(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` on the writer thread (in order); dropped once the store is closed."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            self._pool.submit(self._guarded, fn)

    def save(self, values: dict[str, Any]) -> None:
        self.run(lambda: self._save(values))

    def delete(self, ids: list[str]) -> None:
        self.run(lambda: self._delete(ids))

    async def drain(self) -> None:
        """Wait until every write queued so far is done."""
        if self._closed:
            return
        done: Future[None] = self._pool.submit(lambda: None)
        await asyncio.wrap_future(done)

    def close(self) -> None:
        """Finish queued writes (blocking), then refuse new ones."""
        self._closed = True
        self._pool.shutdown(wait=True)

    @staticmethod
    def _guarded(fn: Callable[[], None]) -> None:
        try:
            fn()
        except (SQLAlchemyError, OSError) as exc:  # a write lost is logged, the writer goes on
            log.warning("jobs: write failed: %s", exc)

    def _save(self, values: dict[str, Any]) -> None:
        with self.db.session() as s, s.begin():
            s.merge(JobRow(**values))

    def _delete(self, ids: list[str]) -> None:
        with self.db.session() as s, s.begin():
            s.execute(delete(JobRow).where(JobRow.id.in_(ids)))
