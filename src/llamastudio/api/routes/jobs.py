"""Every job — downloads, engine builds and installs, model loads — in one shape: list (by kind
and state), inspect with the log's tail, the whole log, cancel, pause, resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from llamastudio.api.deps import StateDep
from llamastudio.jobs import Job, JobDetail, JobState

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("")
def list_jobs(
    state: StateDep,
    kind: Annotated[list[str] | None, Query(description="download, build, install, load")] = None,
    job_state: Annotated[list[JobState] | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[Job]:
    """Newest first; ``kind`` and ``state`` may repeat."""
    return state.jobs.list(kind, job_state, limit)


# reads may open a job's log file (after a restart): sync routes, off the loop
@router.get("/{job_id}")
def get_job(state: StateDep, job_id: str, tail: Annotated[int, Query(ge=0, le=2000)] = 200) -> JobDetail:
    return state.jobs.detail(job_id, tail)


@router.get("/{job_id}/log", response_class=PlainTextResponse)
def get_log(state: StateDep, job_id: str) -> str:
    """The whole log as text (kept in ``<data>/logs/jobs/<id>.log``)."""
    return state.jobs.log_text(job_id)


# actions run on the loop: they start tasks and set the jobs' asyncio events
@router.post("/{job_id}/cancel")
async def cancel(state: StateDep, job_id: str) -> Job:
    return state.jobs.cancel(job_id)


@router.post("/{job_id}/pause")
async def pause(state: StateDep, job_id: str) -> Job:
    return state.jobs.pause(job_id)


@router.post("/{job_id}/resume")
async def resume(state: StateDep, job_id: str) -> Job:
    return state.jobs.resume(job_id)


@router.delete("/{job_id}")
def clear(state: StateDep, job_id: str) -> Job:
    """Forget a finished job and its log (409 while it is queued, running or paused)."""
    return state.jobs.remove(job_id)
