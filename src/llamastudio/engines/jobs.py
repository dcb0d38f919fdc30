"""Engine builds and release installs as background jobs with a live log (for the REST API/UI).

Each job keeps its last 2,000 log lines and publishes ``engine_job`` (state changes) and
``engine_log`` (each line) events. Cancel sets the builder's cancel event, which kills the build's
process group; nothing is registered by a cancelled or failed job.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from llamastudio.engines.registry import Engine
from llamastudio.errors import NotFound, StudioError
from llamastudio.events import EventBus


@dataclass
class EngineJob:
    id: str
    kind: str  # build | install
    title: str
    state: str = "running"  # running | done | failed | cancelled
    log: deque[str] = field(default_factory=lambda: deque(maxlen=2000))
    engine_id: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self, log_tail: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "state": self.state,
            "engine_id": self.engine_id,
            "error": self.error,
            "started": self.started,
            "finished": self.finished,
            "log_lines": len(self.log),
        }
        if log_tail:
            out["log"] = list(self.log)[-log_tail:]
        return out


Work = Callable[[Callable[[str], None], asyncio.Event], Awaitable[Engine]]


class EngineJobs:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.jobs: dict[str, EngineJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, kind: str, title: str, work: Work) -> EngineJob:
        job = EngineJob(uuid.uuid4().hex[:12], kind, title)
        self.jobs[job.id] = job
        task = asyncio.create_task(self._run(job, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed(job)
        return job

    def get(self, job_id: str) -> EngineJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no engine job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> EngineJob:
        job = self.get(job_id)
        job.cancel.set()
        return job

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _changed(self, job: EngineJob) -> None:
        self.bus.publish({"type": "engine_job", "job": job.to_json()})

    async def _run(self, job: EngineJob, work: Work) -> None:
        def on_log(line: str) -> None:
            job.log.append(line)
            self.bus.publish({"type": "engine_log", "job": job.id, "line": line})

        try:
            engine = await work(on_log, job.cancel)
            job.state, job.engine_id = "done", engine.id
        except StudioError as exc:
            job.state = "cancelled" if job.cancel.is_set() else "failed"
            job.error = exc.message
            on_log(f"error: {exc.message}")
        except Exception as exc:  # a bug: the job fails with its type, the service stays up
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            on_log(job.error)
        job.finished = time.time()
        self._changed(job)
