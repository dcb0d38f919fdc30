"""Engine builds and release installs as jobs of the one job system (kinds ``build`` and
``install``), with their log lines and a progress read from the build tool's ``[ 42%]`` /
``[123/456]`` lines. Cancel sets the job's cancel event, which kills the build's process group;
nothing is registered by a cancelled or failed job. A restart marks them failed ("interrupted by a
restart"): the work was a closure of the request, and a half-done build is not resumed.

:class:`EngineJobs` keeps the REST shape of ``/api/engines/jobs``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from llamastudio.engines.registry import Engine
from llamastudio.jobs import Job, JobContext, JobKind, JobManager, Recovery

BUILD, INSTALL = "build", "install"
KINDS = (BUILD, INSTALL)

# one build at a time anyway (the registry's build lock); one install at a time keeps it simple
ENGINE_KINDS = (
    JobKind(BUILD, concurrency=1, recovery=Recovery.FAIL, retain=50),
    JobKind(INSTALL, concurrency=1, recovery=Recovery.FAIL, retain=50),
)

# what the work does: log lines in, the cancel event to honour, an engine out
Work = Callable[[Callable[[str], None], asyncio.Event], Awaitable[Engine]]

_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")  # make: "[ 42%] Building CXX object ..."
_STEPS = re.compile(r"^\[(\d+)/(\d+)\]")  # ninja: "[123/456] Building CXX object ..."


def build_step(line: str) -> tuple[int, int] | None:
    """(done, total) when the line is a build tool's progress line."""
    if m := _PERCENT.match(line):
        return min(int(m.group(1)), 100), 100
    if m := _STEPS.match(line):
        done, total = int(m.group(1)), int(m.group(2))
        return (done, total) if total > 0 and done <= total else None
    return None


def engine_job_view(job: Job, log: list[str] | None = None) -> dict[str, Any]:
    """The ``/api/engines/jobs`` shape of a build or install job."""
    out: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "title": job.title,
        "state": job.state.value,
        "engine_id": job.result.get("engine_id"),
        "error": job.error,
        "started": (job.started_at or job.created_at).timestamp(),
        "finished": job.finished_at.timestamp() if job.finished_at else None,
        "log_lines": job.log_lines,
    }
    if log is not None:
        out["log"] = log
    return out


class EngineJobs:
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs

    def submit(
        self, kind: str, title: str, work: Work, params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue ``work`` as a job of ``kind`` (build or install); returns its REST view."""

        async def run(ctx: JobContext) -> dict[str, Any]:
            def on_log(line: str) -> None:
                ctx.log(line)
                if (step := build_step(line)) is not None:
                    ctx.progress(step[0], step[1], "compiling", unit="steps")

            engine = await work(on_log, ctx.cancel)
            return {"engine_id": engine.id}

        return engine_job_view(self.jobs.submit(kind, title, params, runner=run))

    def list(self) -> list[dict[str, Any]]:
        return [engine_job_view(j) for j in self.jobs.list(KINDS)]

    def get(self, job_id: str, tail: int = 500) -> dict[str, Any]:
        detail = self.jobs.detail(job_id, tail, KINDS)
        return engine_job_view(detail, detail.log)

    def cancel(self, job_id: str) -> dict[str, Any]:
        self.jobs.get(job_id, KINDS)
        return engine_job_view(self.jobs.cancel(job_id))
