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
- an idle model is unloaded after its ``ttl`` (0 = never);
- ``unload`` (a user's stop) lets requests in flight finish first; a request arriving meanwhile
  waits and starts the model again afterwards;
- a model whose process died (``died``) is stopped: its leases still release normally and the next
  request starts it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from llamastudio.aio import cancel_and_wait
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
    kind: str  # acquire | release | started | start_failed | tick | configure | died | unload
    model: str = ""
    fut: asyncio.Future[None] | None = None
    error: StudioError | None = None
    specs: list[ModelSpec] | None = None


@dataclass
class _Entry:
    spec: ModelSpec
    state: str = "stopped"  # stopped | starting | ready | stopping
    in_flight: int = 0
    last_used: float = 0.0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    draining: list[asyncio.Future[None]] = field(default_factory=list)  # unload() callers


class Lease:
    """One request's hold on a ready model; release it when the response is finished."""

    def __init__(self, scheduler: Scheduler, model: str) -> None:
        self.scheduler = scheduler
        self.model = model
        self.released = False

    def release(self) -> None:
        """Frees the slot at once (same thread as the owner, no await in between); the owner then
        does what may follow (drain, waiting placements)."""
        if not self.released:
            self.released = True
            entry = self.scheduler.entries.get(self.model)
            if entry is not None:
                entry.in_flight -= 1
                entry.last_used = self.scheduler.clock()
            self.scheduler._post(_Event("release", self.model))


class Scheduler:
    def __init__(
        self,
        effects: Effects,
        budgets: dict[str, int],
        models: list[ModelSpec],
        clock: Callable[[], float] = time.monotonic,
        wait_for_room: float = 300.0,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.effects = effects
        self.budgets = dict(budgets)
        self.entries = {m.name: _Entry(m) for m in models}
        self.clock = clock
        self.wait_for_room = wait_for_room
        self.on_change = on_change
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.blocked: dict[str, float] = {}  # model → since when it waits for busy models to go idle
        self.evictions = 0  # stopped to make room
        self.unloads = 0  # stopped after their idle TTL
        self.loads = 0
        self._task: asyncio.Task[None] | None = None
        self._starting: set[asyncio.Task[None]] = set()

    # -- public, callable from any task -------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def acquire(self, model: str) -> Lease:
        """Wait until ``model`` is ready and hold it for one request."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(_Event("acquire", model, fut))
        await fut
        return Lease(self, model)

    async def unload(self, model: str) -> None:
        """Stop ``model`` once its requests in flight have finished (never interrupts one)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(_Event("unload", model, fut))
        await fut

    def configure(self, specs: list[ModelSpec]) -> None:
        """Replace the set of models; running ones keep running with their new spec."""
        self._post(_Event("configure", specs=list(specs)))

    def died(self, model: str) -> None:
        """The model's process is gone (crash, kill -9): mark it stopped."""
        self._post(_Event("died", model))

    def queue_depth(self) -> dict[str, int]:
        return {n: len(e.waiters) for n, e in self.entries.items()}

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
                raise TooBusy(
                    f"{model}: {entry.in_flight} requests in flight (limit {spec.max_concurrency})",
                    retry_after=1,
                )
            if entry.state == "ready" and not entry.draining:
                self._lease(entry, fut)
                return
            if len(entry.waiters) >= spec.max_queue:
                raise QueueFull(
                    f"{model}: {len(entry.waiters)} requests already wait for it to load", retry_after=5
                )
            entry.waiters.append(fut)
            if entry.state == "stopped":
                await self._place(entry)
        elif kind == "release":
            entry = self.entries.get(model)
            if entry is None:
                return
            if entry.draining and not entry.in_flight:
                await self._drain(entry)
            await self._retry_blocked()
        elif kind == "started":
            entry = self.entries[model]
            self._set(entry, "ready")
            entry.last_used = self.clock()
            for w in entry.waiters:
                self._lease(entry, w)
            entry.waiters.clear()
        elif kind == "unload":
            assert fut is not None
            entry = self.entries.get(model)
            if entry is None:
                raise NotFound(f"model {model!r} is not configured")
            if entry.state == "stopped":
                fut.set_result(None)
                return
            entry.draining.append(fut)
            if not entry.in_flight and entry.state == "ready":
                await self._drain(entry)
        elif kind == "configure":
            for spec in event.specs or []:
                if spec.name in self.entries:
                    self.entries[spec.name].spec = spec
                else:
                    self.entries[spec.name] = _Entry(spec)
            keep = {s.name for s in event.specs or []}
            for name, e in list(self.entries.items()):
                if name not in keep and e.state == "stopped" and not e.waiters and not e.in_flight:
                    del self.entries[name]
        elif kind == "died":
            entry = self.entries.get(model)
            if entry is not None and entry.state in ("ready", "stopping"):
                self._set(entry, "stopped")
                self.blocked.pop(model, None)
                await self._retry_blocked()
        elif kind == "start_failed":
            entry = self.entries[model]
            self._set(entry, "stopped")
            self._fail_waiters(entry, event.error or StudioError(f"{model} failed to start"))
            self._finish_drain(entry)
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
                    await self._stop(e, evict=False)
                    self.unloads += 1
            for name, since in list(self.blocked.items()):
                if now - since > self.wait_for_room:
                    del self.blocked[name]
                    why = NoRoom(f"{name}: no room was freed within {self.wait_for_room:.0f}s")
                    self._fail_waiters(self.entries[name], why)

    def _set(self, entry: _Entry, state: str) -> None:
        entry.state = state
        if self.on_change is not None:
            self.on_change(entry.spec.name, state)

    async def _drain(self, entry: _Entry) -> None:
        await self._stop(entry, evict=False)
        self._finish_drain(entry)
        if entry.waiters:  # requests that came in while it drained start it again
            await self._place(entry)

    def _finish_drain(self, entry: _Entry) -> None:
        for f in entry.draining:
            if not f.done():
                f.set_result(None)
        entry.draining.clear()

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
        self._set(entry, "starting")
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

    async def _stop(self, entry: _Entry, evict: bool = True) -> None:
        if entry.state in ("stopping", "stopped"):
            return
        self._set(entry, "stopping")
        if evict:
            self.evictions += 1
        await self.effects.stop(entry.spec.name)
        self._set(entry, "stopped")
