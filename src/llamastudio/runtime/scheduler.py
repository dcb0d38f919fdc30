"""The scheduler: the single owner of what runs where.

One asyncio task consumes a queue of typed messages (one dataclass per event, each handled by its
own method) and alone touches the scheduler's state — no locks (a message posted while none is
queued is handled at once in the poster's step: handlers never await, so the order is the same).
After every message it asks the pure policy (``runtime/policy.py``: memory, CPU threads,
fairness) what to do and applies the answer through injected ``Effects``, so it is tested without
processes. The owner never awaits an effect: starts and stops run as tasks that report back
with ``Started``/``StartFailed``/``Stopped``, so an engine slow to stop (SIGTERM ignored → grace
period) delays nobody else. Rules:

- a request for a ready model is leased at once unless the policy holds it back (its CPU threads
  are busy elsewhere, or it is closed to let a waiting model in); for a stopped one the model is
  placed — idle models are evicted (never one with requests in flight, never a pinned one); if
  busy models stand in the way, the request waits for them to drain (bounded by fairness);
- a stopping model's memory counts until its stop has finished; a request for it waits and
  starts it again afterwards;
- requests for a loading model queue (bounded → ``QueueFull``, HTTP 503 + Retry-After) and are
  served together when it is ready; a failed start fails them with the reason;
- at most ``max_concurrency`` requests in flight per model (→ ``TooBusy``, HTTP 429);
- an idle model is unloaded after its ``ttl`` (0 = never); a request that waited
  ``wait_for_room`` for room that was never freed fails (``NoRoom``);
- ``load`` (a user's start) places the model like a request but holds nothing, so CPU threads
  never hold it back;
- ``unload`` (a user's stop) lets requests in flight finish first; a model whose configuration
  disappeared (``configure`` without it) is unloaded the same way and then forgotten, its queued
  requests failing with ``NotFound``;
- a model whose process died (``died``) is stopped; its leases still release normally.

A lease is acknowledged: ``acquire`` hands the caller a ``Lease`` through a future, and a caller
cancelled while waiting withdraws its request, or gives back a lease granted as it left — a
departed caller cannot leave an in-flight count behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from llamastudio.aio import cancel_and_wait
from llamastudio.errors import NoRoom, NotFound, QueueFull, StudioError, TooBusy
from llamastudio.runtime import policy
from llamastudio.runtime.entries import Entry, Loader, Waiter, admits_at_once, fail
from llamastudio.runtime.messages import (
    Acquire,
    Budgets,
    Configure,
    Counters,
    Died,
    Lease,
    Load,
    Message,
    ModelSpec,
    ModelState,
    Release,
    Started,
    StartFailed,
    Stopped,
    Tick,
    Unload,
    Withdraw,
)
from llamastudio.runtime.policy import FAIR_WAIT, State, View

__all__ = ["Counters", "Effects", "Lease", "ModelSpec", "ModelState", "Scheduler"]

log = logging.getLogger(__name__)


class Effects(Protocol):
    async def start(self, model: str) -> None:
        """Start the model and return when it is ready; raise StudioError when it cannot start."""

    async def stop(self, model: str) -> None:
        """Stop the model; may take its grace period (it runs beside the owner, not in it)."""


class Scheduler:
    def __init__(
        self,
        effects: Effects,
        budgets: dict[str, int],
        models: list[ModelSpec],
        clock: Callable[[], float] = time.monotonic,
        wait_for_room: float = 300.0,
        on_change: Callable[[str, str], None] | None = None,
        cores: int = 0,
        fair_wait: float = FAIR_WAIT,
    ) -> None:
        self.effects = effects
        self.budgets = dict(budgets)
        self.cores = cores  # 0: CPU threads are not gated
        self.entries = {m.name: Entry(m) for m in models}
        self.clock = clock
        self.wait_for_room = wait_for_room
        self.fair_wait = fair_wait
        self.on_change = on_change
        self.events: asyncio.Queue[Message] = asyncio.Queue()
        self.evictions = 0  # stopped to make room
        self.unloads = 0  # stopped after their idle TTL
        self.loads = 0
        self._task: asyncio.Task[None] | None = None
        self._effects: set[asyncio.Task[None]] = set()
        self._wake: asyncio.TimerHandle | None = None
        self._handling = self._settled = False  # handling a message; it needs no reconcile
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            Acquire: self._on_acquire,
            Load: self._on_load,
            Withdraw: self._on_withdraw,
            Release: self._on_release,
            Unload: self._on_unload,
            Started: self._on_started,
            StartFailed: self._on_start_failed,
            Stopped: self._on_stopped,
            Died: self._on_died,
            Configure: self._on_configure,
            Budgets: self._on_budgets,
            Tick: self._on_tick,
        }

    # -- public, callable from any task on the loop ---------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._wake is not None:
            self._wake.cancel()
        for t in list(self._effects):
            await cancel_and_wait(t)

    async def acquire(self, model: str) -> Lease:
        """Wait until ``model`` may serve one more request and hold it for that request."""
        fut: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._post(Acquire(model, fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().release()  # granted as the caller left: give it back
            else:
                self._post(Withdraw(model, fut))
            raise

    async def load(self, model: str) -> None:
        """Wait until ``model`` is ready, without holding it: placed (and evicting) like a
        request, but never held back by CPU threads nor counted in flight."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(Load(model, fut))
        try:
            await fut
        except asyncio.CancelledError:
            self._post(Withdraw(model, fut))
            raise

    async def unload(self, model: str) -> None:
        """Stop ``model`` once its requests in flight have finished (never interrupts one)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(Unload(model, fut))
        await fut

    def configure(self, specs: list[ModelSpec]) -> None:
        """Replace the set of models: running ones keep running with their new spec; running
        ones that are no longer configured are unloaded (after their requests) and forgotten."""
        self._post(Configure(tuple(specs)))

    def set_budgets(self, budgets: dict[str, int], cores: int) -> None:
        self._post(Budgets(dict(budgets), cores))

    def died(self, model: str) -> None:
        """The model's process is gone (crash, kill -9): mark it stopped."""
        self._post(Died(model))

    def tick(self) -> None:
        """Check idle TTLs and bounded waits (call periodically; the owner task does the work)."""
        self._post(Tick())

    def snapshot(self) -> dict[str, ModelState]:
        return {n: e.snapshot() for n, e in self.entries.items()}

    def snapshot_of(self, model: str) -> ModelState | None:
        """One model's snapshot (None: the scheduler does not know it)."""
        return None if (entry := self.entries.get(model)) is None else entry.snapshot()

    def counters(self) -> Counters:
        return Counters(self.loads, self.evictions, self.unloads)

    # -- the owner task -------------------------------------------------------------------------
    def _post(self, message: Message) -> None:
        """Handled at once in the caller's step when nothing is queued (what the owner would do,
        less two task switches per request); else queued behind the others."""
        if self._task is not None and self.events.empty() and not self._handling:
            self._handle(message)
        else:
            self.events.put_nowait(message)

    async def _run(self) -> None:
        while True:
            self._handle(await self.events.get())

    def _handle(self, message: Message) -> None:
        self._handling, self._settled = True, False
        try:
            self._handlers[type(message)](message)
            if not self._settled:
                self._reconcile()
        except Exception:  # a bug in one message must not stop the owner (and all serving)
            log.exception("scheduler: handling %r failed", message)
        finally:
            self._handling = False

    def _on_acquire(self, m: Acquire) -> None:
        entry = self.entries.get(m.model)
        if entry is None or entry.removed:
            fail(m.fut, NotFound(f"model {m.model!r} is not configured"))
            return
        spec = entry.spec
        if spec.max_concurrency and entry.in_flight >= spec.max_concurrency:
            fail(
                m.fut,
                TooBusy(
                    f"{m.model}: {entry.in_flight} requests in flight (limit {spec.max_concurrency})",
                    retry_after=1,
                ),
            )
            return
        at_once = self._wake is None and admits_at_once(entry, self.entries.values(), self.cores)
        waiter = Waiter(m.fut, self.clock())
        entry.waiters.append(waiter)
        self._admit(entry) if at_once else self._reconcile()  # the same answer, without asking
        if waiter in entry.waiters and len(entry.waiters) > spec.max_queue:
            entry.waiters.remove(waiter)
            why = "wait for it to load" if entry.state != "ready" else "wait for their turn"
            fail(m.fut, QueueFull(f"{m.model}: {spec.max_queue} requests already {why}", retry_after=5))
        else:
            self._settled = True  # reconciled with nothing changed since

    def _on_load(self, m: Load) -> None:
        entry = self.entries.get(m.model)
        if entry is None or entry.removed:
            fail(m.fut, NotFound(f"model {m.model!r} is not configured"))
        elif entry.state == "ready" and not entry.draining:
            m.fut.set_result(None)
        else:
            entry.loaders.append(Loader(m.fut, self.clock()))

    def _on_withdraw(self, m: Withdraw) -> None:
        entry = self.entries.get(m.model)
        if entry is not None:
            entry.waiters = deque(w for w in entry.waiters if w.fut is not m.fut)
            entry.loaders = deque(w for w in entry.loaders if w.fut is not m.fut)

    def _on_release(self, m: Release) -> None:
        entry = self.entries.get(m.model)
        if entry is None:
            return
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.last_used = self.clock()
        if not entry.in_flight:
            entry.busy_since = None
        self._forget_if_gone(entry)
        # nothing waits, drains, is removed or closed: the policy would decide nothing (TTLs are ticked)
        self._settled = self._wake is None and not any(e.wants_policy() for e in self.entries.values())

    def _on_unload(self, m: Unload) -> None:
        entry = self.entries.get(m.model)
        if entry is None:
            fail(m.fut, NotFound(f"model {m.model!r} is not configured"))
        elif entry.state == "stopped":
            m.fut.set_result(None)
        else:
            entry.draining.append(m.fut)  # the policy stops it once nothing is in flight

    def _on_started(self, m: Started) -> None:
        entry = self.entries[m.model]  # a starting model is never forgotten
        self._set(entry, "ready")
        entry.last_used = self.clock()  # its queued requests are admitted by the policy
        if not entry.draining and not entry.removed:
            while entry.loaders:
                fut = entry.loaders.popleft().fut
                if not fut.done():
                    fut.set_result(None)

    def _on_start_failed(self, m: StartFailed) -> None:
        entry = self.entries[m.model]
        self._set(entry, "stopped")
        entry.fail_waiters(m.error)
        entry.finish_drain()
        self._forget_if_gone(entry)

    def _on_stopped(self, m: Stopped) -> None:
        entry = self.entries[m.model]
        if entry.state != "stopping":
            return  # defensive: only this message ends "stopping"
        self._set(entry, "stopped")
        entry.finish_drain()
        self._forget_if_gone(entry)

    def _on_died(self, m: Died) -> None:
        """Only a ready model is marked stopped: when stopping, ``Stopped`` follows; when
        starting, the start fails."""
        entry = self.entries.get(m.model)
        if entry is not None and entry.state == "ready":
            self._set(entry, "stopped")
            entry.finish_drain()
            self._forget_if_gone(entry)

    def _on_configure(self, m: Configure) -> None:
        keep = {s.name for s in m.specs}
        for spec in m.specs:
            entry = self.entries.get(spec.name)
            if entry is None:
                self.entries[spec.name] = Entry(spec)
            else:
                entry.spec, entry.removed = spec, False
        for entry in list(self.entries.values()):
            if entry.spec.name not in keep and not entry.removed:
                entry.removed = True
                entry.fail_waiters(NotFound(f"model {entry.spec.name!r} is no longer configured"))
                self._forget_if_gone(entry)

    def _on_budgets(self, m: Budgets) -> None:
        self.budgets, self.cores = dict(m.budgets), m.cores

    def _on_tick(self, m: Tick) -> None:
        now = self.clock()
        for name in policy.expired(self._views(), now):
            self.unloads += 1
            entry = self.entries[name]
            self._stop(entry, f"unloaded after {entry.spec.ttl:.0f}s idle (TTL)")
        for entry in self.entries.values():
            if entry.state == "starting":
                continue  # bounded by the load timeout instead
            for queue in (entry.waiters, entry.loaders):
                while queue and now - queue[0].since > self.wait_for_room:
                    why = f"{entry.spec.name}: no room was freed within {self.wait_for_room:.0f}s"
                    fail(queue.popleft().fut, NoRoom(why))

    # -- applying the policy ----------------------------------------------------------------------
    def _views(self) -> list[View]:
        """Models that matter to the policy: holding memory, or with requests queued."""
        out = []
        for e in self.entries.values():
            if any(w.fut.done() for w in e.waiters):  # cancelled callers not yet withdrawn
                e.waiters = deque(w for w in e.waiters if not w.fut.done())
            if any(w.fut.done() for w in e.loaders):
                e.loaders = deque(w for w in e.loaders if not w.fut.done())
            if e.state == "stopped" and not e.waiters and not e.loaders:
                continue
            out.append(e.view())
        return out

    def _reconcile(self) -> None:
        d = policy.decide(self._views(), self.budgets, self.cores, self.clock(), self.fair_wait)
        for e in self.entries.values():
            e.closed = e.spec.name in d.close
        for name in d.stop:
            entry = self.entries[name]
            self._stop(entry, "configuration removed" if entry.removed else "stopped on request")
        if d.evict:
            for_whom = sorted(set(d.start) | {v.name for v in self._views() if v.waiting_since is not None})
            why = "evicted to make room for " + (
                ", ".join(n for n in for_whom if n not in d.evict) or "another model"
            )
            for name in d.evict:
                self.evictions += 1
                self._stop(self.entries[name], why)
        for name, why in d.fail:
            self.entries[name].fail_waiters(NoRoom(why))
        for name in d.start:
            self._start(self.entries[name])
        for name in d.admit:
            self._admit(self.entries[name])
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if d.wake_at is not None:
            delay = max(0.0, d.wake_at - self.clock())
            self._wake = asyncio.get_running_loop().call_later(delay, self.tick)

    def _admit(self, entry: Entry) -> None:
        limit = entry.spec.max_concurrency
        now = self.clock()
        while entry.waiters and not (limit and entry.in_flight >= limit):
            fut = entry.waiters.popleft().fut
            if fut.done():
                continue
            entry.in_flight += 1
            entry.last_used = now
            if entry.busy_since is None:
                entry.busy_since = now
            fut.set_result(Lease(self._post, entry.spec.name))

    def _start(self, entry: Entry) -> None:
        self._set(entry, "starting")
        self.loads += 1
        self._spawn(self._run_start(entry.spec.name))

    def _stop(self, entry: Entry, note: str) -> None:
        """Never awaited by the owner: the stop reports ``Stopped`` when done. ``note``: why."""
        entry.note = note
        self._set(entry, "stopping")
        entry.busy_since = None
        self._spawn(self._run_stop(entry.spec.name))

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._effects.add(task)
        task.add_done_callback(self._effects.discard)

    async def _run_start(self, model: str) -> None:
        try:
            await self.effects.start(model)
        except StudioError as exc:
            self._post(StartFailed(model, exc))
            return
        except Exception as exc:
            log.exception("%s: start failed", model)
            self._post(StartFailed(model, StudioError(f"{model} failed to start: {exc}")))
            return
        self._post(Started(model))

    async def _run_stop(self, model: str) -> None:
        try:
            await self.effects.stop(model)
        except Exception:
            log.exception("%s: stop failed", model)
        finally:
            self._post(Stopped(model))

    def _set(self, entry: Entry, state: State) -> None:
        entry.state = state
        if state == "ready":
            entry.note = None
        else:
            entry.closed = False
        if self.on_change is not None:
            self.on_change(entry.spec.name, state)

    def _forget_if_gone(self, entry: Entry) -> None:
        if entry.removed and entry.state == "stopped" and not entry.in_flight:
            entry.finish_drain()
            self.entries.pop(entry.spec.name, None)
