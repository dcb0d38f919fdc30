"""Issue 14 item 2: one job system (``jobs/``) for downloads, builds, installs and model loads.

The manager runs against a real SQLite database and the real event bus; runners are coroutines
held by asyncio events, and every test awaits events instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llamastudio.errors import Conflict, NotFound, StudioError
from llamastudio.events import EventBus
from llamastudio.jobs import (
    INTERRUPTED,
    Job,
    JobChanged,
    JobContext,
    JobEvent,
    JobKind,
    JobLog,
    JobManager,
    JobProgress,
    JobRemoved,
    JobState,
    Recovery,
    parse_event,
)
from llamastudio.jobs.model import TRANSITIONS, can_move
from llamastudio.jobs.policy import expired, free_slots, recovery
from llamastudio.jobs.record import JobRecord
from llamastudio.store import Database
from llamastudio.store.models import JobRow

S = JobState


# -- helpers -----------------------------------------------------------------------------------------
class Events:
    """The job events on a bus, typed, awaited with a deadline (never slept for)."""

    def __init__(self, bus: EventBus) -> None:
        self.queue = bus.subscribe()
        self.seen: list[JobEvent] = []

    async def until(self, pred: Callable[[JobEvent], bool], timeout: float = 15) -> JobEvent:
        async with asyncio.timeout(timeout):
            while True:
                event = parse_event(await self.queue.get())
                if event is None:
                    continue
                self.seen.append(event)
                if pred(event):
                    return event

    async def state(self, job_id: str, state: JobState) -> Job:
        event = await self.until(
            lambda e: isinstance(e, JobChanged) and e.job.id == job_id and e.job.state == state
        )
        assert isinstance(event, JobChanged)
        return event.job

    def states(self, job_id: str) -> list[JobState]:
        return [e.job.state for e in self.seen if isinstance(e, JobChanged) and e.job.id == job_id]


class Gate:
    """A runner that logs, reports a step, then waits until released or stopped."""

    def __init__(self, result: dict[str, Any] | None = None) -> None:
        self.release = asyncio.Event()
        self.runs: list[dict[str, Any]] = []
        self.result = result if result is not None else {"answer": 42}

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.runs.append(dict(ctx.params))
        ctx.log(f"run {len(self.runs)}")
        ctx.progress(1, 4, "step one", unit="steps")
        release = asyncio.ensure_future(self.release.wait())
        stop = asyncio.ensure_future(ctx.cancel.wait())
        await asyncio.wait({release, stop}, return_when=asyncio.FIRST_COMPLETED)
        release.cancel()
        stop.cancel()
        if ctx.stopping:
            raise StudioError("stopped on request")
        return self.result


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "studio.db")
    yield database
    database.close()


@pytest.fixture
async def bus() -> EventBus:
    return EventBus(maxsize=10_000)


@contextlib.asynccontextmanager
async def opened(
    db: Database, bus: EventBus, tmp_path: Path, *kinds: JobKind, **kw: Any
) -> AsyncIterator[JobManager]:
    jobs = JobManager(db, bus, tmp_path / "logs" / "jobs", **kw)
    for kind in kinds:
        jobs.register(kind)
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.close()


# -- the state machine ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (S.QUEUED, S.RUNNING, True),
        (S.QUEUED, S.PAUSED, True),
        (S.QUEUED, S.CANCELLED, True),
        (S.QUEUED, S.DONE, False),  # a job that never ran is not done
        (S.RUNNING, S.DONE, True),
        (S.RUNNING, S.FAILED, True),
        (S.RUNNING, S.QUEUED, True),  # a restart requeues it
        (S.PAUSED, S.QUEUED, True),
        (S.PAUSED, S.RUNNING, False),  # resume goes through the queue (and its limit)
        (S.PAUSED, S.DONE, False),
        (S.FAILED, S.QUEUED, True),
        (S.CANCELLED, S.QUEUED, True),
        (S.DONE, S.QUEUED, False),  # done is final
        (S.DONE, S.FAILED, False),
        (S.FAILED, S.DONE, False),
    ],
)
def test_transitions(old: JobState, new: JobState, ok: bool) -> None:
    assert can_move(old, new) is ok


def test_every_state_has_its_transitions() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert TRANSITIONS[S.DONE] == frozenset()


async def _noop(ctx: JobContext) -> None:
    return None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (JobKind("download", _noop, recovery=Recovery.RESUME), Recovery.RESUME),
        (JobKind("build", recovery=Recovery.RESUME), Recovery.FAIL),  # nothing to restart it with
        (JobKind("build", _noop, recovery=Recovery.FAIL), Recovery.FAIL),
        (JobKind("load", recovery=Recovery.DROP), Recovery.DROP),
        (None, Recovery.FAIL),  # a kind this version does not know
    ],
)
def test_recovery_policy(kind: JobKind | None, expected: Recovery) -> None:
    assert recovery(kind) == expected


@pytest.mark.parametrize(("limit", "running", "free"), [(1, 0, 1), (1, 1, 0), (2, 5, 0), (None, 99, None)])
def test_free_slots(limit: int | None, running: int, free: int | None) -> None:
    assert free_slots(limit, running) == free


def test_expired_keeps_the_newest_finished_jobs() -> None:
    def rec(i: int, state: JobState) -> JobRecord:
        return JobRecord(
            id=f"{i:016x}", kind="k", title="", state=state, created_at=datetime(2026, 1, i, tzinfo=UTC)
        )

    records = [rec(1, S.DONE), rec(2, S.RUNNING), rec(3, S.FAILED), rec(4, S.CANCELLED), rec(5, S.PAUSED)]
    assert [r.id[-1] for r in expired(records, 2)] == ["1"]  # active and paused ones never expire
    assert expired(records, 3) == [] and len(expired(records, 0)) == 3


# -- running, events, persistence ----------------------------------------------------------------
async def test_a_job_runs_reports_and_is_persisted(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)
    gate = Gate()
    async with opened(db, bus, tmp_path, JobKind("work", gate)) as jobs:
        job = jobs.submit("work", "some work", {"n": 1})
        assert job.state == S.RUNNING  # a free slot: started at once
        await events.until(lambda e: isinstance(e, JobProgress) and e.id == job.id)
        gate.release.set()
        done = await events.state(job.id, S.DONE)
        assert done.result == {"answer": 42} and done.progress.fraction == 1.0
        assert events.states(job.id) == [S.QUEUED, S.RUNNING, S.DONE]
        logs = [e for e in events.seen if isinstance(e, JobLog) and e.id == job.id]
        assert [(e.line, e.n) for e in logs] == [("run 1", 1)]
        progress = next(e for e in events.seen if isinstance(e, JobProgress))
        assert progress.progress.message == "step one" and progress.progress.unit == "steps"
        assert gate.runs == [{"n": 1}]
        await jobs.store.drain()
        with db.session() as s:
            row = s.get(JobRow, job.id)
            assert row is not None
            assert (row.state, row.result, row.log_lines, row.progress) == ("done", {"answer": 42}, 1, 1.0)
        assert jobs.detail(job.id, 10).log == ["run 1"]
        assert jobs.log_text(job.id) == "run 1\n"


async def test_a_failure_keeps_its_message_and_logs_it(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)

    async def refuses(ctx: JobContext) -> None:
        raise StudioError("the source has no CMakeLists.txt")

    async def buggy(ctx: JobContext) -> None:
        raise KeyError("oops")

    async with opened(db, bus, tmp_path, JobKind("a", refuses), JobKind("b", buggy)) as jobs:
        first, second = jobs.submit("a", "a"), jobs.submit("b", "b")
        failed = await events.state(first.id, S.FAILED)
        assert failed.error == "the source has no CMakeLists.txt"
        assert jobs.detail(first.id).log == ["error: the source has no CMakeLists.txt"]
        bug = await events.state(second.id, S.FAILED)
        assert bug.error == "internal error: KeyError: 'oops'"  # a bug fails the job, not the manager


async def test_concurrency_limit_per_kind(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)
    one, other = Gate(), Gate()
    kinds = (JobKind("one", one, concurrency=1), JobKind("other", other, concurrency=None))
    async with opened(db, bus, tmp_path, *kinds) as jobs:
        a, b = jobs.submit("one", "a"), jobs.submit("one", "b")
        x, y = jobs.submit("other", "x"), jobs.submit("other", "y")
        assert (a.state, b.state) == (S.RUNNING, S.QUEUED)  # one at a time of this kind
        assert (x.state, y.state) == (S.RUNNING, S.RUNNING)  # no limit for the other
        assert [j.id for j in jobs.list(states=["queued"])] == [b.id]
        one.release.set()
        await events.state(a.id, S.DONE)
        await events.state(b.id, S.DONE)  # started when a's slot freed
        assert len(one.runs) == 2
        other.release.set()
        await events.state(y.id, S.DONE)


async def test_cancel_a_queued_and_a_running_job(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)
    gate = Gate()
    async with opened(db, bus, tmp_path, JobKind("w", gate, concurrency=1)) as jobs:
        running, queued = jobs.submit("w", "r"), jobs.submit("w", "q")
        assert jobs.cancel(queued.id).state == S.CANCELLED
        assert jobs.cancel(running.id).state == S.RUNNING  # asked; the runner stops
        stopped = await events.state(running.id, S.CANCELLED)
        assert stopped.error is None and len(gate.runs) == 1  # the queued one never ran
        with pytest.raises(Conflict, match="is cancelled"):
            jobs.cancel(running.id)
        with pytest.raises(NotFound):
            jobs.cancel("0123456789abcdef")


async def test_cancel_from_a_worker_thread_wakes_the_runner(
    db: Database, bus: EventBus, tmp_path: Path
) -> None:
    """An asyncio.Event set from another thread may never wake its waiter: a stop requested off
    the loop (a sync route's threadpool) is handed to the runner's loop."""
    asyncio.get_running_loop().set_debug(True)  # debug mode raises on a loop touched off-thread
    events = Events(bus)
    gate = Gate()
    async with opened(db, bus, tmp_path, JobKind("w", gate)) as jobs:
        job = jobs.submit("w", "w")
        await events.until(lambda e: isinstance(e, JobProgress) and e.id == job.id)
        for _ in range(3):  # let the runner's waiters start waiting on the event
            await asyncio.sleep(0)
        await asyncio.to_thread(jobs.cancel, job.id)
        assert (await events.state(job.id, S.CANCELLED)).id == job.id


async def test_pause_and_resume_continue_from_the_params(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)
    gate = Gate()
    async with opened(db, bus, tmp_path, JobKind("dl", gate, pausable=True), JobKind("b", Gate())) as jobs:
        job = jobs.submit("dl", "file", {"url": "u"})
        await events.until(lambda e: isinstance(e, JobProgress) and e.id == job.id)
        jobs.pause(job.id)
        paused = await events.state(job.id, S.PAUSED)
        assert paused.progress.done == 1 and paused.progress.total == 4  # kept for the resume
        assert jobs.resume(job.id).state == S.RUNNING
        gate.release.set()
        await events.state(job.id, S.DONE)
        assert gate.runs == [{"url": "u"}, {"url": "u"}]
        assert events.states(job.id) == [S.QUEUED, S.RUNNING, S.PAUSED, S.QUEUED, S.RUNNING, S.DONE]
        with pytest.raises(Conflict, match="is done"):
            jobs.resume(job.id)
        other = jobs.submit("b", "not pausable")
        with pytest.raises(Conflict, match="cannot be paused"):
            jobs.pause(other.id)
        assert jobs.get(other.id).pausable is False and jobs.get(job.id).pausable is True


async def test_a_job_brought_with_its_runner_cannot_be_resumed(
    db: Database, bus: EventBus, tmp_path: Path
) -> None:
    events = Events(bus)

    async def fails(ctx: JobContext) -> None:
        raise StudioError("no")

    async with opened(db, bus, tmp_path, JobKind("build")) as jobs:
        job = jobs.submit("build", "b", runner=fails)
        await events.state(job.id, S.FAILED)
        assert jobs.get(job.id).resumable is False
        with pytest.raises(Conflict, match="cannot be resumed"):
            jobs.resume(job.id)


async def test_reports_from_threads_arrive_in_order(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)

    async def threaded(ctx: JobContext) -> None:
        def work() -> None:
            for i in range(1, 201):
                ctx.log(f"line {i}")
                ctx.progress(i, 200, unit="bytes")

        await asyncio.to_thread(work)

    async with opened(db, bus, tmp_path, JobKind("t", threaded)) as jobs:
        job = jobs.submit("t", "threads")
        await events.state(job.id, S.DONE)
        lines = [e.n for e in events.seen if isinstance(e, JobLog)]
        assert lines == list(range(1, 201))
        assert jobs.detail(job.id, 5).log == [f"line {i}" for i in range(196, 201)]


async def test_progress_events_are_throttled_but_never_the_last(
    db: Database, bus: EventBus, tmp_path: Path
) -> None:
    events = Events(bus)
    clock = Clock()
    seen: list[float] = []

    async def steady(ctx: JobContext) -> None:
        for i in range(1, 11):
            clock.t += 0.1
            ctx.progress(i, 10, unit="steps")
        seen.append(1)

    async with opened(db, bus, tmp_path, JobKind("p", steady), clock=clock, progress_interval=0.25) as jobs:
        job = jobs.submit("p", "p")
        await events.state(job.id, S.DONE)
    done = [e.progress.done for e in events.seen if isinstance(e, JobProgress)]
    assert done[-1] == 10  # completion always goes out
    assert 2 <= len(done) <= 5, done  # 10 reports over 1 s at one per 0.25 s
    assert done == sorted(done)


async def test_retention_removes_old_finished_jobs_and_their_logs(
    db: Database, bus: EventBus, tmp_path: Path
) -> None:
    events = Events(bus)
    gate = Gate()
    gate.release.set()
    async with opened(db, bus, tmp_path, JobKind("r", gate, retain=2)) as jobs:
        ids = []
        for i in range(4):
            job = jobs.submit("r", f"r{i}")
            await events.state(job.id, S.DONE)
            ids.append(job.id)
        await events.until(lambda e: isinstance(e, JobRemoved) and e.id == ids[1])  # after ids[3]'s done
        removed = [e.id for e in events.seen if isinstance(e, JobRemoved)]
        assert removed == ids[:2]
        with pytest.raises(NotFound):
            jobs.get(ids[0])
        await jobs.store.drain()
        assert not jobs.logs.path(ids[0]).exists() and jobs.logs.path(ids[3]).exists()
        with db.session() as s:
            assert s.get(JobRow, ids[0]) is None and s.get(JobRow, ids[3]) is not None


# -- tracked jobs (model loads) --------------------------------------------------------------------
async def test_a_tracked_job_is_reported_by_its_owner(db: Database, bus: EventBus, tmp_path: Path) -> None:
    events = Events(bus)
    async with opened(db, bus, tmp_path, JobKind("load", concurrency=None, recovery=Recovery.DROP)) as jobs:
        handle = jobs.track("load", "load m", {"model": "m"})
        assert jobs.get(handle.id).state == S.RUNNING and jobs.get(handle.id).cancellable is False
        handle.progress(3, 8, "loading tensors", unit="steps")
        handle.log("load_tensors: loading model tensors")
        with pytest.raises(Conflict, match="cannot be cancelled"):
            jobs.cancel(handle.id)
        handle.finish({"port": 1234})
        done = await events.state(handle.id, S.DONE)
        assert done.result == {"port": 1234} and done.progress.fraction == 1.0
        handle.fail("late")  # a handle ends once; later reports are ignored
        assert jobs.get(handle.id).state == S.DONE

        asked: list[str] = []
        with jobs.track("load", "load n", on_cancel=lambda: asked.append("stop n")) as second:
            jobs.cancel(second.id)  # the owner decides: here it stops and says so
            assert asked == ["stop n"]
            second.cancelled("stopped by the user")
        assert (await events.state(second.id, S.CANCELLED)).error == "stopped by the user"

        with contextlib.suppress(StudioError), jobs.track("load", "load o") as third:
            raise StudioError("not enough memory")
        failed = await events.state(third.id, S.FAILED)
        assert failed.error == "not enough memory"
        assert jobs.detail(third.id).log == ["error: not enough memory"]


# -- restart recovery ------------------------------------------------------------------------------
def _kinds(download: Gate, build: Gate) -> tuple[JobKind, ...]:
    return (
        JobKind("download", download, concurrency=1, recovery=Recovery.RESUME, pausable=True),
        JobKind("build", build, recovery=Recovery.FAIL),
        JobKind("load", concurrency=None, recovery=Recovery.DROP),
    )


async def test_restart_recovery_per_kind_after_a_shutdown(tmp_path: Path) -> None:
    """Jobs running at shutdown stay running in the database; the next start settles them per
    kind: downloads requeued (and continued), builds failed, loads dropped. Logs survive."""
    db = Database(tmp_path / "studio.db")
    bus = EventBus(maxsize=10_000)
    events = Events(bus)
    first_dl, first_build = Gate(), Gate()
    async with opened(db, bus, tmp_path, *_kinds(first_dl, first_build)) as jobs:
        dl, queued = jobs.submit("download", "dl", {"file": "a"}), jobs.submit("download", "dl2")
        build = jobs.submit("build", "build")
        load = jobs.track("load", "load m")
        await events.until(lambda e: isinstance(e, JobProgress) and e.id == dl.id)
        await events.until(lambda e: isinstance(e, JobLog) and e.id == build.id)
    # closed: nothing was settled by the shutdown
    with db.session() as s:
        states = {r.id: r.state for r in s.query(JobRow)}
    assert states == {dl.id: "running", queued.id: "queued", build.id: "running", load.id: "running"}
    db.close()

    db = Database(tmp_path / "studio.db")
    bus = EventBus(maxsize=10_000)
    events = Events(bus)
    dl_gate, build_gate = Gate({"paths": ["x"]}), Gate()
    dl_gate.release.set()
    jobs = JobManager(db, bus, tmp_path / "logs" / "jobs")
    for kind in _kinds(dl_gate, build_gate):
        jobs.register(kind)
    assert jobs.get(dl.id).state == S.RUNNING  # as stored, until start() settles it
    await jobs.start()
    try:
        assert (await events.state(dl.id, S.DONE)).result == {"paths": ["x"]}
        await events.state(queued.id, S.DONE)
        assert dl_gate.runs[0] == {"file": "a"}  # continued from its params
        failed = jobs.get(build.id)
        assert (failed.state, failed.error) == (S.FAILED, INTERRUPTED)
        assert jobs.detail(build.id).log == ["run 1", f"error: {INTERRUPTED}"]  # the file outlived us
        assert build_gate.runs == []
        with pytest.raises(NotFound):
            jobs.get(load.id)
    finally:
        await jobs.close()
        db.close()


async def test_restart_recovery_after_a_crash(tmp_path: Path) -> None:
    """A database a killed studio left: rows running and queued, of every kind."""
    db = Database(tmp_path / "studio.db")
    rows = {
        "0000000000000001": ("download", "running"),
        "0000000000000002": ("build", "running"),
        "0000000000000003": ("install", "queued"),  # a kind without recovery of its own: failed
        "0000000000000004": ("load", "running"),
        "0000000000000005": ("download", "paused"),  # paused stays paused
        "0000000000000006": ("build", "done"),
    }
    with db.session() as s, s.begin():
        for job_id, (kind, state) in rows.items():
            s.add(JobRow(id=job_id, kind=kind, state=state, title=kind, params={}))
    bus = EventBus(maxsize=10_000)
    events = Events(bus)
    dl, build = Gate(), Gate()
    dl.release.set()
    async with opened(db, bus, tmp_path, *_kinds(dl, build)) as jobs:
        await events.state("0000000000000001", S.DONE)
        got = {j.id: (j.state, j.error) for j in jobs.list()}
    assert got == {
        "0000000000000001": (S.DONE, None),
        "0000000000000002": (S.FAILED, INTERRUPTED),
        "0000000000000003": (S.FAILED, INTERRUPTED),
        "0000000000000005": (S.PAUSED, None),
        "0000000000000006": (S.DONE, None),
    }
    with db.session() as s:
        assert s.get(JobRow, "0000000000000004") is None  # the load was dropped
        assert s.get(JobRow, "0000000000000002").state == "failed"  # type: ignore[union-attr]
    db.close()


# -- through the API and /ws -----------------------------------------------------------------------
OWN = "http://127.0.0.1:8080"
CLIENT = {"X-Studio-Client": "tests"}
OLD_VOCABULARY = {"job", "progress", "engine_job", "engine_log"}


def test_one_vocabulary_reaches_ws_and_a_build_is_cancelled(tmp_path: Path) -> None:
    """Issue 14: two job systems spoke two vocabularies on /ws (``job``/``progress`` for
    downloads, ``engine_job``/``engine_log`` for builds). A build — a real cmake run, held by its
    CMakeLists.txt — is now a job: its events are ``job.*``, and cancel kills it mid-configure."""
    from starlette.testclient import TestClient

    from llamastudio.api.app import create_app
    from llamastudio.config import Settings

    src = tmp_path / "llama.cpp"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        'cmake_minimum_required(VERSION 3.14)\nproject("llama.cpp" NONE)\n'
        'message(STATUS "configuring the fake tree")\nexecute_process(COMMAND sleep 300)\n'
    )
    app = create_app(Settings(data_dir=tmp_path / "data", allow_commands=True))
    seen: list[dict[str, Any]] = []
    with (
        TestClient(app, base_url=OWN, headers=CLIENT) as client,
        client.websocket_connect("ws://127.0.0.1:8080/ws", headers={"Origin": OWN}) as ws,
    ):

        def until(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
            while True:
                event: dict[str, Any] = ws.receive_json()
                seen.append(event)
                if pred(event):
                    return event

        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["jobs"] == []
        assert "downloads" not in hello and "engine_jobs" not in hello
        job = client.post("/api/engines/build", json={"source": str(src)}).json()
        assert job["kind"] == "build" and job["state"] == "running"
        until(lambda e: e["type"] == "job.log" and "configuring the fake tree" in e["line"])
        assert client.post(f"/api/engines/jobs/{job['id']}/cancel").status_code == 200
        ended = until(lambda e: e["type"] == "job.changed" and e["job"]["state"] != "running")
        assert ended["job"]["state"] == "cancelled" and ended["job"]["id"] == job["id"]
        view = client.get(f"/api/engines/jobs/{job['id']}").json()
        assert view["state"] == "cancelled" and view["engine_id"] is None
        assert any("configuring the fake tree" in line for line in view["log"])
        generic = client.get(f"/api/jobs/{job['id']}", params={"tail": 1000}).json()
        assert generic["log"] == view["log"] and generic["params"]["source"] == str(src)
        assert "configuring the fake tree" in client.get(f"/api/jobs/{job['id']}/log").text
        assert [j["id"] for j in client.get("/api/engines/jobs").json()] == [job["id"]]
        assert client.get("/api/engines").json() == []  # nothing registered by a cancelled build
    types = {e["type"] for e in seen}
    assert {"job.changed", "job.log"} <= types
    assert not types & OLD_VOCABULARY, types


async def test_a_download_row_of_the_previous_version_is_migrated(tmp_path: Path) -> None:
    """Migration 0005 turns the old download rows' byte counts and paths into the new fields."""
    from alembic import command
    from sqlalchemy import text

    from llamastudio.store.db import alembic_config, make_engine

    path = tmp_path / "old.db"
    engine = make_engine(path)
    command.upgrade(alembic_config(engine), "0004")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, state, title, progress, params, created_at, updated_at) "
                "VALUES ('0123456789abcdef0123456789abcdef', 'download', 'done', 'r:Q8_0', 1.0, "
                """'{"repo": "r", "bytes_total": 2048, "paths": ["/m.gguf"], "files": []}', """
                "'2026-11-23 10:00:00', '2026-11-23 10:00:00')"
            )
        )
    engine.dispose()
    db = Database(path)
    bus = EventBus()
    jobs = JobManager(db, bus, tmp_path / "logs")
    try:
        job = jobs.get("0123456789abcdef0123456789abcdef")
        assert (job.progress.done, job.progress.total, job.progress.unit) == (2048, 2048, "bytes")
        assert job.result == {"paths": ["/m.gguf"]} and job.state == S.DONE
    finally:
        await jobs.close()
        db.close()


# -- model loads: llama-server's log as progress ---------------------------------------------------
VERBOSE_LOAD = """\
0.00.005.279 I srv    load_model: loading model '/models/llama-Q8_0.gguf'
0.00.037.310 I llama_model_loader: loaded meta data with 26 key-value pairs and 21 tensors
0.00.045.309 I print_info: file size   = 17.74 MiB (8.50 BPW)
0.00.059.469 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
0.00.061.086 I load_tensors:   CPU_Mapped model buffer size =    17.74 MiB
0.00.061.430 I llama_context: constructing llama_context
0.00.061.629 I llama_kv_cache:        CPU KV buffer size =     0.12 MiB
0.00.062.349 I cmn  common_init_: warming up the model with an empty run - please wait ...
0.00.517.512 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 256, kv_unified = 'true'
0.00.519.455 I srv          init: init: chat template, thinking = 0
0.00.519.495 I srv  llama_server: model loaded
0.00.519.510 I srv  llama_server: listening on http://127.0.0.1:18779
0.00.600.000 I srv  log_server_r: request: GET /health 127.0.0.1 200
""".splitlines()


class Recorder:
    """Stands in for a job handle (the adapter's Reporter)."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float | None, str | None]] = []
        self.lines: list[str] = []

    def progress(
        self, done: float, total: float | None = None, message: str | None = None, unit: str | None = None
    ) -> None:
        self.steps.append((done, total, message))

    def log(self, line: str) -> None:
        self.lines.append(line)


def test_load_log_lines_become_steps() -> None:
    from llamastudio.engines.load_progress import STAGES, LoadProgress

    rec = Recorder()
    steps = LoadProgress(rec)
    moved = [steps.feed(line) for line in VERBOSE_LOAD]
    messages = [m for _, _, m in rec.steps]
    assert messages == [
        "starting",
        "reading the model",
        "loading tensors",
        "creating the context",
        "allocating the KV cache",
        "warming up",
        "initializing slots",
        "model loaded",
        "listening",
    ]
    assert [d for d, _, _ in rec.steps] == list(range(len(STAGES) + 1))  # forward, one step each
    assert steps.done and moved[-1] is False  # served requests are not the load's
    assert rec.lines == VERBOSE_LOAD[:-1]  # the load's log ends when it listens
    late = LoadProgress(Recorder())
    late.feed("main: server is listening on http://127.0.0.1:8080 - starting the main loop")  # older
    assert late.done and late.stage == len(STAGES) - 1
    back = LoadProgress(Recorder())
    back.feed("llama_server: model loaded")
    assert back.feed("llama_context: constructing llama_context") is False  # never moves back


async def test_a_real_llama_server_load_reports_progress(
    db: Database, bus: EventBus, tmp_path: Path, tiny_models: dict[str, Path], rig_bin: Callable[[str], Path]
) -> None:
    from llamastudio.engines.load_progress import LOAD, LOAD_KIND, LoadProgress
    from llamastudio.runtime.process import free_port

    events = Events(bus)
    async with opened(db, bus, tmp_path, LOAD_KIND) as jobs:
        job = jobs.track(LOAD, "load llama", {"model": "llama"})
        steps = LoadProgress(job)
        argv = [str(rig_bin("llama-server")), "-m", str(tiny_models["llama-Q8_0"])]
        proc = await asyncio.create_subprocess_exec(
            *argv, "--port", str(free_port()), "-c", "256",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while not steps.done and (raw := await proc.stdout.readline()):
                    steps.feed(raw.decode(errors="replace").rstrip())
        finally:
            proc.terminate()
            try:  # drain: an engine blocked writing to a full pipe would never exit
                async with asyncio.timeout(30):
                    await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        assert steps.done, jobs.detail(job.id, 50).log
        job.finish()
        await events.state(job.id, S.DONE)
        progress = [e.progress for e in events.seen if isinstance(e, JobProgress) and e.id == job.id]
        assert progress[0].message == "starting" and progress[-1].message == "listening"
        assert progress[-1].fraction == 1.0
        done = [p.done for p in progress]
        assert done == sorted(done) and len(set(done)) >= 4, [p.message for p in progress]
        assert any("model loaded" in line for line in jobs.detail(job.id, 500).log)
