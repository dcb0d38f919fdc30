"""Clearing finished jobs (``JobTable.remove`` / ``clear``): a finished job and its log file are
forgotten, in memory, in the database and on disk, with a ``job.removed`` event; an active job is
refused with 409 and stays."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llamastudio.errors import Conflict, NotFound
from llamastudio.events import EventBus
from llamastudio.jobs import JobContext, JobKind, JobManager, JobState
from llamastudio.store import Database


async def _done(ctx: JobContext) -> dict[str, str]:
    ctx.log("a line")
    return {}


async def _fails(ctx: JobContext) -> dict[str, str]:
    raise RuntimeError("broken on purpose")


async def _waits(ctx: JobContext) -> dict[str, str]:
    await ctx.cancel.wait()
    return {}


async def _settled(jobs: JobManager, job_id: str) -> JobState:
    for _ in range(500):
        state = jobs.get(job_id).state
        if state not in (JobState.QUEUED, JobState.RUNNING):
            return state
        await asyncio.sleep(0.01)
    raise AssertionError(f"{job_id} did not finish")


def test_finished_jobs_are_cleared_and_active_ones_refused(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(tmp_path / "studio.db")
        bus = EventBus(maxsize=10_000)
        events = bus.subscribe()
        jobs = JobManager(db, bus, tmp_path / "logs")
        jobs.register(JobKind("build", concurrency=None))
        jobs.register(JobKind("other", concurrency=None))
        await jobs.start()
        try:
            done = jobs.submit("build", "ok", runner=_done)
            failed = jobs.submit("build", "bad", runner=_fails)
            active = jobs.submit("build", "waits", runner=_waits)
            other = jobs.submit("other", "elsewhere", runner=_done)
            assert await _settled(jobs, done.id) == JobState.DONE
            assert await _settled(jobs, failed.id) == JobState.FAILED
            await _settled(jobs, other.id)
            log_file = tmp_path / "logs" / f"{done.id}.log"
            jobs.logs.flush()
            assert log_file.read_text() == "a line\n"

            with pytest.raises(Conflict) as refused:
                jobs.remove(active.id)
            assert refused.value.status_code == 409 and "running" in str(refused.value)
            with pytest.raises(NotFound):
                jobs.remove(done.id, kinds=("other",))  # not of those kinds

            assert jobs.remove(done.id).id == done.id
            await jobs.store.drain()  # the file is deleted on the writer thread
            assert not log_file.exists()
            with pytest.raises(NotFound):
                jobs.get(done.id)
            cleared = jobs.clear(("build",))
            assert [j.id for j in cleared] == [failed.id]  # the running one and the other kind stay
            assert {j.id for j in jobs.list()} == {active.id, other.id}
            removed = []
            while not events.empty():
                ev = events.get_nowait()
                if ev["type"] == "job.removed":
                    removed.append(ev["id"])
            assert removed == [done.id, failed.id]
            jobs.cancel(active.id)
            await _settled(jobs, active.id)
        finally:
            await jobs.close()
        # and not back after a restart: gone from the database too
        again = JobManager(db, EventBus(), tmp_path / "logs")
        assert {j.id for j in again.list()} == {active.id, other.id}
        db.close()

    asyncio.run(run())
