"""The scheduler's vocabulary: what it is told about a model (``ModelSpec``), one message type per
event it handles, the ``Lease`` a request holds, and the snapshot it gives out (``ModelState``).
Only the scheduler's owner task consumes the messages (``scheduler.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamastudio.errors import StudioError
from llamastudio.runtime.policy import State


@dataclass(frozen=True)
class ModelSpec:
    name: str
    reserve: dict[str, int]  # bytes per device ("CUDA0", "CPU", …) from the estimator
    ttl: float = 600.0  # seconds idle before unloading; 0 = never
    pinned: bool = False
    group: str | None = None  # its group; rules: swap, exclusive, persistent (see policy.py)
    swap: bool = True
    exclusive: bool = False
    persistent: bool = False
    max_concurrency: int = 0  # 0 = unlimited
    max_queue: int = 64
    threads: int = 0  # CPU threads it computes with (see policy.py); 0 = wholly on GPUs


# -- messages: one type per event ----------------------------------------------------------------
@dataclass(frozen=True)
class Acquire:
    model: str
    fut: asyncio.Future[Lease]


@dataclass(frozen=True)
class Load:
    """Make the model ready, without holding it (a user's start): placed like a request, never
    held back by CPU threads (loading is not computing)."""

    model: str
    fut: asyncio.Future[None]


@dataclass(frozen=True)
class Withdraw:
    """A caller cancelled while its request (or load) waited."""

    model: str
    fut: asyncio.Future[Any]


@dataclass(frozen=True)
class Release:
    model: str


@dataclass(frozen=True)
class Unload:
    model: str
    fut: asyncio.Future[None]


@dataclass(frozen=True)
class Started:
    model: str


@dataclass(frozen=True)
class StartFailed:
    model: str
    error: StudioError


@dataclass(frozen=True)
class Stopped:
    model: str


@dataclass(frozen=True)
class Died:
    model: str


@dataclass(frozen=True)
class Configure:
    specs: tuple[ModelSpec, ...]


@dataclass(frozen=True)
class Budgets:
    budgets: dict[str, int]
    cores: int


@dataclass(frozen=True)
class Tick:
    pass


Message = (
    Acquire
    | Load
    | Withdraw
    | Release
    | Unload
    | Started
    | StartFailed
    | Stopped
    | Died
    | Configure
    | Budgets
    | Tick
)


@dataclass(frozen=True)
class ModelState:
    """A read-only snapshot of one model, for status views."""

    name: str
    state: State
    in_flight: int
    queued: int
    last_used: float
    closed: bool
    threads: int
    note: str | None = None  # why it last stopped (TTL, evicted for whom, on request)
    pinned: bool = False
    ttl: float = 0.0  # seconds idle before unloading; 0 = never
    max_concurrency: int = 0


@dataclass(frozen=True)
class Counters:
    """What the scheduler did since it started (for metrics)."""

    loads: int
    evictions: int  # stopped to make room
    ttl_unloads: int  # stopped after their idle TTL


class Lease:
    """One request's hold on a ready model; release it when the response is finished."""

    def __init__(self, post: Callable[[Release], None], model: str) -> None:
        self._post = post
        self.model = model
        self.released = False

    def release(self) -> None:
        """Idempotent. The owner counts it; messages are handled in order, so an ``acquire``
        posted after this release sees the slot free."""
        if not self.released:
            self.released = True
            self._post(Release(self.model))
