"""What a job is, as the API and the events show it: states, the legal transitions, progress.

    queued  → running | paused | cancelled | failed (a restart's recovery)
    running → done | failed | cancelled | paused | queued (a restart's recovery: resumed)
    paused  → queued (resume) | cancelled
    failed, cancelled → queued (resume: kinds that can restart from their params)
    done    → nothing

A job that was running when the studio stopped is settled by its kind's recovery at the next start
(requeued, failed "interrupted by a restart", or dropped), never by a guess at shutdown.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from llamastudio.errors import Conflict


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.PAUSED, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.PAUSED, JobState.QUEUED}
    ),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
    JobState.DONE: frozenset(),
}


def can_move(old: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[old]


def check_move(job_id: str, old: JobState, new: JobState) -> None:
    """Raise :class:`Conflict` (409) for a transition the state machine does not have."""
    if not can_move(old, new):
        raise Conflict(f"job {job_id} is {old.value}: it cannot become {new.value}")


class Progress(BaseModel):
    """How far a job is: ``done`` of ``total`` (None: unknown) in ``unit``, and what it is doing."""

    model_config = ConfigDict(frozen=True)

    done: float = 0.0
    total: float | None = None
    unit: str = Field("", description='"bytes", "steps" or "" (a fraction of 1)')
    message: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fraction(self) -> float | None:
        """done / total, within [0, 1]; None while the total is unknown."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


class Job(BaseModel):
    """A job as every face sees it (REST, WebSocket, CLI): a snapshot, never a live object."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    title: str
    state: JobState
    progress: Progress = Progress()
    rate: float | None = Field(None, description="units of progress per second in the current run")
    eta_s: float | None = None
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log_lines: int = 0
    cancellable: bool = True
    pausable: bool = False
    resumable: bool = False


class JobDetail(Job):
    """A job with the tail of its log."""

    log: list[str] = Field(default_factory=list)
