"""The scheduler's record of one model (``Entry``) and its two read-only projections: the pure
policy's ``View`` and the status ``ModelState``. Only the scheduler's owner task touches an entry."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from llamastudio.errors import StudioError
from llamastudio.runtime.messages import Lease, ModelSpec, ModelState
from llamastudio.runtime.policy import State, View


@dataclass
class Waiter:
    """A request waiting for a lease."""

    fut: asyncio.Future[Lease]
    since: float


@dataclass
class Loader:
    """A ``load`` caller waiting for the model to be ready."""

    fut: asyncio.Future[None]
    since: float


@dataclass
class Entry:
    spec: ModelSpec
    state: State = "stopped"
    in_flight: int = 0
    last_used: float = 0.0
    busy_since: float | None = None
    closed: bool = False  # fairness: new requests queue while it drains
    removed: bool = False  # its configuration is gone: unload, then forget
    note: str | None = None  # why it last stopped ("unloaded after 600s idle (TTL)", "evicted …")
    waiters: deque[Waiter] = field(default_factory=deque)
    loaders: deque[Loader] = field(default_factory=deque)  # load() callers: resolved when ready
    draining: list[asyncio.Future[None]] = field(default_factory=list)  # unload() callers

    def wants_policy(self) -> bool:
        """Whether the policy has anything to decide about it besides a TTL."""
        return bool(self.waiters or self.loaders or self.draining or self.removed or self.closed)

    def finish_drain(self) -> None:
        for f in self.draining:
            if not f.done():
                f.set_result(None)
        self.draining.clear()

    def fail_waiters(self, exc: StudioError) -> None:
        for queue in (self.waiters, self.loaders):
            for w in queue:
                fail(w.fut, exc)
            queue.clear()

    def view(self) -> View:
        """What the policy sees of it."""
        since = [q[0].since for q in (self.waiters, self.loaders) if q]
        s = self.spec
        return View(
            name=s.name,
            state=self.state,
            reserve=s.reserve,
            threads=s.threads,
            in_flight=self.in_flight,
            last_used=self.last_used,
            busy_since=self.busy_since,
            waiting_since=min(since) if since else None,
            pinned=s.pinned,
            group=s.group,
            swap=s.swap,
            exclusive=s.exclusive,
            persistent=s.persistent,
            draining=bool(self.draining) or self.removed,
            closed=self.closed,
            ttl=s.ttl,
        )

    def snapshot(self) -> ModelState:
        """What status views see of it."""
        s = self.spec
        return ModelState(
            s.name, self.state, self.in_flight, len(self.waiters), self.last_used, self.closed, s.threads,
            self.note, s.pinned, s.ttl, s.max_concurrency,
        )  # fmt: skip


def admits_at_once(entry: Entry, entries: Iterable[Entry], cores: int) -> bool:
    """Whether the policy would admit one more request for ``entry`` and decide nothing else,
    known without asking it: ready and open, nothing anywhere waiting, draining or closed, and no
    other model's CPU threads it could have to wait for (``policy.thread_blockers``)."""
    others = [e for e in entries if e is not entry]
    if entry.state != "ready" or entry.wants_policy() or any(e.wants_policy() for e in others):
        return False
    gated = cores > 0 and entry.spec.threads > 0 and entry.in_flight == 0
    return not gated or not any(e.in_flight and e.spec.threads > 0 for e in others)


def fail(fut: asyncio.Future[Any], exc: StudioError) -> None:
    if not fut.done():
        fut.set_exception(exc)
