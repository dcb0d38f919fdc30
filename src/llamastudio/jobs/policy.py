"""The job system's decisions as pure functions of plain data: what a restart does with a job,
which finished jobs are past their kind's retention, how many more may start."""

from __future__ import annotations

from collections.abc import Iterable

from llamastudio.jobs.model import FINISHED, Progress
from llamastudio.jobs.record import JobRecord
from llamastudio.jobs.runner import JobKind, Recovery


def recovery(kind: JobKind | None) -> Recovery:
    """What a restart does with a job of ``kind`` that was queued or running. Only a kind that
    can start a job from its params resumes; an unknown kind fails (never silently vanishes)."""
    if kind is None or (kind.recovery == Recovery.RESUME and kind.runner is None):
        return Recovery.FAIL
    return kind.recovery


def expired(records: Iterable[JobRecord], keep: int) -> list[JobRecord]:
    """The finished jobs beyond the newest ``keep``, oldest first."""
    done = sorted((r for r in records if r.state in FINISHED), key=lambda r: r.created_at)
    return done[: max(0, len(done) - keep)]


def free_slots(limit: int | None, running: int) -> int | None:
    """How many more jobs of a kind may start now (None: no limit)."""
    return None if limit is None else max(0, limit - running)


def merged(
    old: Progress, done: float, total: float | None, unit: str | None, message: str | None
) -> Progress:
    """A progress report over the last one: what is not given stays."""
    return Progress(
        done=done,
        total=old.total if total is None else total,
        unit=old.unit if unit is None else unit,
        message=old.message if message is None else message,
    )


def completed(p: Progress) -> Progress:
    """The progress of a job that is done: all of its total (1 of 1 when it had none)."""
    total = p.total or max(p.done, 1.0)
    return Progress(done=total, total=total, unit=p.unit, message="")
