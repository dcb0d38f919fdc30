"""The scheduler: the single owner of what runs where.

One asyncio task consumes an event queue and alone touches the scheduler's state (no locks). It
decides and acts through injected ``Effects`` (start/stop a model), so it is tested without
processes. Rules:

- a request for a ready model is leased at once; for a stopped one the model is placed — if its
  memory reservation does not fit next to what runs, idle models are evicted (least recently
  used first, the smallest first among equals) — **never one with requests in flight, never a
  pinned one**; if only busy models stand in the way, the request waits (bounded) for them;
- requests for a loading model queue (bounded → ``QueueFull``, HTTP 503 + Retry-After) and are
  released together when it is ready; a failed start fails them with the reason;
- at most ``max_concurrency`` requests in flight per model (→ ``TooBusy``, HTTP 429);
- models of one exclusive ``group`` never run together;
- an idle model is unloaded after its ``ttl`` (0 = never).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from llamastudio.errors import NotFound, StudioError


class QueueFull(StudioError):
    status_code = 503
    code = "queue_full"


class TooBusy(StudioError):
    status_code = 429
    code = "too_many_requests"


class NoRoom(StudioError):
    status_code = 503
    code = "no_room"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    reserve: dict[str, int]  # bytes per device ("CUDA0", "CPU", …) from the estimator
    ttl: float = 600.0  # seconds idle before unloading; 0 = never
    pinned: bool = False
    group: str | None = None  # models of one exclusive group never run together
    max_concurrency: int = 0  # 0 = unlimited
    max_queue: int = 64


class Effects(Protocol):
    async def start(self, model: str) -> None:
        """Start the model and return when it is ready; raise StudioError when it cannot start."""

    async def stop(self, model: str) -> None: ...


@dataclass
class _Event:
    kind: str  # acquire | release | started | start_failed | tick
    model: str = ""
    fut: asyncio.Future[None] | None = None
    error: StudioError | None = None


@dataclass
class _Entry:
    spec: ModelSpec
    state: str = "stopped"  # stopped | starting | ready | stopping
    in_flight: int = 0
    last_used: float = 0.0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Lease:
    """One request's hold on a ready model; release it when the response is finished."""

    def __init__(self, scheduler: Scheduler, model: str) -> None:
        self.scheduler = scheduler
        self.model = model
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.scheduler._post(_Event("release", self.model))


class Scheduler:
    def __init__(
        self,
        effects: Effects,
        budgets: dict[str, int],
        models: list[ModelSpec],
        clock: Callable[[], float] = time.monotonic,
        wait_for_room: float = 300.0,
    ) -> None:
        self.effects = effects
        self.budgets = dict(budgets)
        self.entries = {m.name: _Entry(m) for m in models}
        self.clock = clock
        self.wait_for_room = wait_for_room
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.blocked: dict[str, float] = {}  # model → since when it waits for busy models to go idle
        self.evictions = 0
        self.loads = 0
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Task[None]] = set()

    # -- public, callable from any task -------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def acquire(self, model: str) -> Lease:
        """Wait until ``model`` is ready and hold it for one request."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(_Event("acquire", model, fut))
        await fut
        return Lease(self, model)

    def state(self) -> dict[str, dict[str, object]]:
        now = self.clock()
        return {
            n: {
                "state": e.state,
                "in_flight": e.in_flight,
                "idle_s": now - e.last_used if e.last_used else None,
            }
            for n, e in self.entries.items()
        }

    def tick(self) -> None:
        """Check idle TTLs (call periodically; the owner task does the work)."""
        self._post(_Event("tick"))

    # -- the owner task ------------------------------------------------------------------------
    def _post(self, event: _Event) -> None:
        self.events.put_nowait(event)

    async def _run(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self._handle(event)
            except StudioError as exc:
                if event.fut is not None and not event.fut.done():
                    event.fut.set_exception(exc)

    async def _handle(self, event: _Event) -> None:
        """Effects' ``stop`` is awaited here, by the owner: it must be bounded (grace period)."""
        kind, model, fut = event.kind, event.model, event.fut
        if kind == "acquire":
            assert fut is not None
            entry = self.entries.get(model)
            if entry is None:
                raise NotFound(f"model {model!r} is not configured")
            spec = entry.spec
            if spec.max_concurrency and entry.in_flight >= spec.max_concurrency:
                raise TooBusy(f"{model}: {entry.in_flight} requests in flight (limit {spec.max_concurrency})")
            if entry.state == "ready":
                self._lease(entry, fut)
                return
            if len(entry.waiters) >= spec.max_queue:
                raise QueueFull(f"{model}: {len(entry.waiters)} requests already wait for it to load")
            entry.waiters.append(fut)
            if entry.state == "stopped":
                await self._place(entry)
        elif kind == "release":
            entry = self.entries[model]
            entry.in_flight -= 1
            entry.last_used = self.clock()
            await self._retry_blocked()
        elif kind == "started":
            entry = self.entries[model]
            entry.state = "ready"
            entry.last_used = self.clock()
            for w in entry.waiters:
                self._lease(entry, w)
            entry.waiters.clear()
        elif kind == "start_failed":
            entry = self.entries[model]
            entry.state = "stopped"
            self._fail_waiters(entry, event.error or StudioError(f"{model} failed to start"))
        elif kind == "tick":
            now = self.clock()
            for e in self.entries.values():
                idle = now - e.last_used
                if (
                    e.state == "ready"
                    and not e.in_flight
                    and not e.spec.pinned
                    and e.spec.ttl
                    and idle >= e.spec.ttl
                ):
                    await self._stop(e)
            for name, since in list(self.blocked.items()):
                if now - since > self.wait_for_room:
                    del self.blocked[name]
                    why = NoRoom(f"{name}: no room was freed within {self.wait_for_room:.0f}s")
                    self._fail_waiters(self.entries[name], why)

    def _lease(self, entry: _Entry, fut: asyncio.Future[None]) -> None:
        if fut.done():
            return
        entry.in_flight += 1
        entry.last_used = self.clock()
        fut.set_result(None)

    def _fail_waiters(self, entry: _Entry, exc: StudioError) -> None:
        for w in entry.waiters:
            if not w.done():
                w.set_exception(exc)
        entry.waiters.clear()

    def _used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for e in self.entries.values():
            if e.state != "stopped":
                for dev, n in e.spec.reserve.items():
                    used[dev] = used.get(dev, 0) + n
        return used

    def _fits(self, spec: ModelSpec, freed: frozenset[str] = frozenset()) -> bool:
        used = self._used()
        for name in freed:
            for dev, n in self.entries[name].spec.reserve.items():
                used[dev] -= n
        return all(used.get(dev, 0) + n <= self.budgets.get(dev, 0) for dev, n in spec.reserve.items())

    async def _place(self, entry: _Entry) -> None:
        spec = entry.spec
        if not all(n <= self.budgets.get(dev, 0) for dev, n in spec.reserve.items()):
            self._fail_waiters(entry, NoRoom(f"{spec.name} needs more memory than the devices have"))
            return
        conflicts = [
            e
            for e in self.entries.values()
            if e is not entry
            and e.state != "stopped"
            and spec.group is not None
            and e.spec.group == spec.group
        ]
        victims: list[_Entry] = list(conflicts)
        candidates = sorted(
            (
                e
                for e in self.entries.values()
                if e is not entry and e.state == "ready" and e not in victims and not e.spec.pinned
            ),
            key=lambda e: (e.last_used, sum(e.spec.reserve.values())),
        )
        for e in candidates:
            if self._fits(spec, frozenset(v.spec.name for v in victims)):
                break
            victims.append(e)
        busy = [v for v in victims if v.in_flight or v.spec.pinned]
        if busy or not self._fits(spec, frozenset(v.spec.name for v in victims)):
            # never interrupt a request: wait for the busy ones to finish, then try again
            self.blocked.setdefault(spec.name, self.clock())
            for v in victims:
                if not v.in_flight and not v.spec.pinned and v.state == "ready":
                    await self._stop(v)
            return
        for v in victims:
            await self._stop(v)
        entry.state = "starting"
        self.loads += 1
        task = asyncio.create_task(self._start(entry.spec.name))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _retry_blocked(self) -> None:
        for name in list(self.blocked):
            entry = self.entries[name]
            del self.blocked[name]
            if entry.state == "stopped" and entry.waiters:
                await self._place(entry)

    async def _start(self, model: str) -> None:
        try:
            await self.effects.start(model)
        except StudioError as exc:
            self._post(_Event("start_failed", model, error=exc))
            return
        self._post(_Event("started", model))

    async def _stop(self, entry: _Entry) -> None:
        if entry.state in ("stopping", "stopped"):
            return
        entry.state = "stopping"
        self.evictions += 1
        await self.effects.stop(entry.spec.name)
        entry.state = "stopped"
