"""Download jobs: a queue with a concurrency limit, progress, cancel / pause / resume, and
recovery after a restart (jobs live in the database; partial data stays in the HF cache).

One asyncio task per worker takes job ids from the queue; the blocking transfer runs in a thread.
State changes and progress are published to subscribers (the WebSocket, later) as events.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from llamastudio.errors import Conflict, NotFound, StudioError
from llamastudio.events import EventBus
from llamastudio.hub.client import HubClient
from llamastudio.hub.download import DownloadCancelled, pull_files, select_files
from llamastudio.hub.quants import RepoFile
from llamastudio.store import Database
from llamastudio.store.models import JobRow

ACTIVE = ("queued", "running")


@dataclass
class _Live:
    cancel: threading.Event = field(default_factory=threading.Event)
    action: str = ""  # "pause" or "cancel" when stopping on request
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    last_saved: float = 0.0


class DownloadManager:
    def __init__(
        self,
        db: Database,
        client_factory: Callable[[], HubClient],
        concurrency: int = 2,
        bus: EventBus | None = None,
    ) -> None:
        self.db = db
        self.client_factory = client_factory
        self.concurrency = concurrency
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.live: dict[str, _Live] = {}
        self.bus = bus or EventBus()
        self.workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the workers and requeue jobs a previous run left queued or running."""
        if self.workers:
            return
        with self.db.session() as s, s.begin():
            for row in s.scalars(select(JobRow).where(JobRow.kind == "download", JobRow.state.in_(ACTIVE))):
                row.state = "queued"
                self.queue.put_nowait(row.id)
        self.workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        for live in self.live.values():
            live.action = live.action or "pause"  # interrupted, not cancelled: resumed next start
            live.cancel.set()
        for task in self.workers:
            task.cancel()
        for task in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.workers = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        return self.bus.subscribe()

    def _publish(self, event: dict[str, Any]) -> None:
        self.bus.publish(event)

    async def submit(
        self, repo: str, quant: str | None = None, file: str | None = None, revision: str | None = None
    ) -> dict[str, Any]:
        client = self.client_factory()
        _, files = await asyncio.to_thread(client.files, repo, revision)
        wanted = select_files(repo, files, quant, file)
        job_id = uuid.uuid4().hex
        params = {
            "repo": repo,
            "revision": revision or "main",
            "quant": quant,
            "bytes_total": sum(f.size for f in wanted),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in wanted],
        }
        with self.db.session() as s, s.begin():
            s.add(
                JobRow(
                    id=job_id,
                    kind="download",
                    state="queued",
                    title=f"{repo}:{quant or file or ''}",
                    progress=0.0,
                    params=params,
                )
            )
        self.queue.put_nowait(job_id)
        job = self.get(job_id)
        self._publish({"type": "job", "job": job})
        return job

    def _set(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self.db.session() as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no download job {job_id!r}")
            for k, v in changes.items():
                setattr(row, k, v)
        job = self.get(job_id)
        self._publish({"type": "job", "job": job})
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None or row.kind != "download":
                raise NotFound(f"no download job {job_id!r}")
            return self._public(row)

    def list(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(
                select(JobRow).where(JobRow.kind == "download").order_by(JobRow.created_at.desc())
            )
            return [self._public(r) for r in rows]

    def _public(self, row: JobRow) -> dict[str, Any]:
        live = self.live.get(row.id)
        out = {
            "id": row.id,
            "state": row.state,
            "title": row.title,
            "progress": row.progress,
            "error": row.error,
            "repo": row.params.get("repo"),
            "files": [f["path"] for f in row.params["files"]],
            "bytes_total": row.params.get("bytes_total", 0),
            "bytes_done": 0,
            "speed": 0.0,
            "eta_s": None,
            "created_at": row.created_at.isoformat(),
            "paths": row.params.get("paths", []),
        }
        if live is not None and row.state == "running":
            elapsed = max(time.monotonic() - live.started, 1e-6)
            speed = live.done / elapsed
            out |= {
                "bytes_done": live.done,
                "speed": speed,
                "eta_s": (live.total - live.done) / speed if speed > 0 else None,
            }
        elif row.state == "done":
            out["bytes_done"] = out["bytes_total"]
        return out

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._stop(job_id, "cancel")

    def pause(self, job_id: str) -> dict[str, Any]:
        return self._stop(job_id, "pause")

    def _stop(self, job_id: str, action: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] not in ACTIVE and not (action == "cancel" and job["state"] == "paused"):
            raise Conflict(f"job {job_id} is {job['state']}")
        live = self.live.get(job_id)
        if live is not None:  # running: the worker stops it between chunks and sets the state
            live.action = action
            live.cancel.set()
            return job
        return self._set(job_id, state="cancelled" if action == "cancel" else "paused")

    def resume(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] not in ("paused", "failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job['state']}")
        job = self._set(job_id, state="queued", error=None)
        self.queue.put_nowait(job_id)
        return job

    async def _worker(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await self._run(job_id)
            finally:
                self.queue.task_done()

    async def _run(self, job_id: str) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None or row.state != "queued":
                return  # paused or cancelled while waiting
            params = dict(row.params)
        files = [RepoFile(f["path"], f["size"], f["sha256"]) for f in params["files"]]
        live = _Live(total=params["bytes_total"])
        self.live[job_id] = live
        self._set(job_id, state="running")
        finished: dict[str, int] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            finished[name] = done
            live.done = sum(finished.values())
            now = time.monotonic()
            if now - live.last_saved > 0.5:
                live.last_saved = now
                self._progress(job_id, live)

        try:
            client = self.client_factory()
            paths = await asyncio.to_thread(
                pull_files, client, params["repo"], params["revision"], files, on_progress, live.cancel
            )
        except DownloadCancelled:
            self._set(job_id, state="cancelled" if live.action == "cancel" else "paused")
        except StudioError as exc:
            self._set(job_id, state="failed", error=exc.message)
        except Exception as exc:  # a bug must not kill the worker
            self._set(job_id, state="failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self._set(job_id, state="done", progress=1.0, params=params | {"paths": [str(p) for p in paths]})
        finally:
            self.live.pop(job_id, None)

    def _progress(self, job_id: str, live: _Live) -> None:
        fraction = live.done / live.total if live.total else 0.0
        with self.db.session() as s, s.begin():
            row = s.get(JobRow, job_id)
            if row is not None:
                row.progress = fraction
        speed = live.done / max(time.monotonic() - live.started, 1e-6)
        self._publish(
            {
                "type": "progress",
                "id": job_id,
                "bytes_done": live.done,
                "bytes_total": live.total,
                "progress": fraction,
                "speed": speed,
                "eta_s": (live.total - live.done) / speed if speed > 0 else None,
            }
        )
