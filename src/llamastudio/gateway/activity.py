"""The gateway's recent requests, for the UI's activity panel (like llama-swap's): one entry per
request, published on the event bus when it starts (waiting for its model), when it has the model
(running) and when it ends; the last ``KEEP`` are kept in memory for ``GET /api/activity``.

Nothing here runs per chunk. The relay already hands llama-server's final ``timings`` to
``Metrics.timings`` (once per request); that call also fills the current request's entry, found
through a context variable: the gateway sets it before the relay's task is created, and a task
copies its creator's context, so concurrent requests never see each other's entry.

Figures come from the engine's ``timings``: tokens in (``prompt_n`` + ``cache_n``), tokens out
(``predicted_n``), generation speed (``predicted_per_second``); time to first token is the
request's duration minus the engine's generation time (``predicted_ms``), so it includes queueing
and loading. Engines that send no ``timings`` (vLLM, SGLang, LMDeploy) leave those empty.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any

from llamastudio.events import EventBus

KEEP = 200  # entries kept for GET /api/activity
EVENT = "activity"  # the bus event's type; its ``request`` is an entry (``Entry.public``)
MAX_NAME = 200  # a model name the client made up is cut to this many characters
_TIMING = re.compile(
    rb'"(cache_n|prompt_n|predicted_n|predicted_ms|predicted_per_second|draft_n|draft_n_accepted)"'
    rb"\s*:\s*(-?[0-9.eE+-]+)"
)
# housekeeping a client or UI polls (path labels, metrics.py): not shown, or they would bury the work
QUIET = frozenset(
    {
        "/slots",
        "/slots/{id}",
        "/props",
        "/health",
        "/v1/health",
        "/models",
        "/v1/models",
        "/metrics",
        "/tokenize",
        "/detokenize",
        "/apply-template",
        "/lora-adapters",
        "/v1/messages/count_tokens",
        "/chat/completions/input_tokens",
        "/v1/chat/completions/input_tokens",
        "/responses/input_tokens",
        "/v1/responses/input_tokens",
    }
)
_current: ContextVar[Entry | None] = ContextVar("llamastudio_activity", default=None)


@dataclass(slots=True)
class Entry:
    id: int
    model: str
    path: str
    started_at: float  # wall clock (seconds since the epoch), for the UI
    status: int | None = None  # None while in flight
    queued_ms: float | None = None  # waiting for the model (queue, load), once it has it
    duration_ms: float | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    cached: int | None = None
    tokens_out: int | None = None
    tokens_per_second: float | None = None
    _t0: float = 0.0  # perf_counter at the start
    _quiet: bool = False  # housekeeping (QUIET): neither kept nor published
    _gen_ms: float | None = None

    def public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PUBLIC}


PUBLIC = tuple(f.name for f in fields(Entry) if not f.name.startswith("_"))


class Activity:
    def __init__(self, bus: EventBus | None = None) -> None:
        """``bus``: where each change is published (nothing is built while nobody listens)."""
        self.bus = bus
        self.recent: deque[Entry] = deque(maxlen=KEEP)
        self._ids = itertools.count(1)

    def begin(self, model: str, path: str, t0: float) -> Entry:
        """A request has its model's name (``t0``: its ``perf_counter`` start; ``path``: its
        label, bounded); it is this context's current request from now on."""
        quiet = path in QUIET
        entry = Entry(
            0 if quiet else next(self._ids), model[:MAX_NAME], path, time.time(), _t0=t0, _quiet=quiet
        )
        _current.set(entry)
        if not quiet:
            self.recent.append(entry)
            self._emit(entry)
        return entry

    def acquired(self, entry: Entry, model: str) -> None:
        """The request holds its model (``model``: the configured name the client's resolved to)
        and goes to the engine: published, so the UI shows it running, no longer waiting."""
        entry.model = model
        entry.queued_ms = round((time.perf_counter() - entry._t0) * 1000, 1)
        self._emit(entry)

    def end(self, entry: Entry, status: int) -> None:
        entry.status = status
        entry.duration_ms = round((time.perf_counter() - entry._t0) * 1000, 1)
        if entry._gen_ms is not None:
            entry.ttft_ms = round(max(0.0, entry.duration_ms - entry._gen_ms), 1)
        if _current.get() is entry:
            _current.set(None)
        self._emit(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        """Newest first, requests in flight included."""
        return [e.public() for e in reversed(self.recent)]

    def _emit(self, entry: Entry) -> None:
        if self.bus is not None and self.bus.subscribers and not entry._quiet:
            self.bus.publish({"type": EVENT, "request": entry.public()})


def timing_fields(chunk: bytes) -> dict[str, float]:
    """llama-server's ``timings`` figures in ``chunk``, read from its last ``"timings"`` on in one
    scan (a generated text's quotes are escaped: it cannot fake them)."""
    found: dict[str, float] = {}
    for name, value in _TIMING.findall(chunk, max(chunk.rfind(b'"timings"'), 0)):
        with contextlib.suppress(ValueError):
            found.setdefault(name.decode(), float(value))
    return found


def timings(found: dict[str, float]) -> None:
    """The current request's figures from llama-server's final ``timings`` (``timing_fields``)."""
    entry = _current.get()
    if entry is None:
        return
    if "predicted_n" in found:
        entry.tokens_out = int(found["predicted_n"])
    if "prompt_n" in found:
        entry.cached = int(found.get("cache_n", 0))
        entry.tokens_in = int(found["prompt_n"]) + entry.cached
    if "predicted_per_second" in found:
        entry.tokens_per_second = round(found["predicted_per_second"], 2)
    if "predicted_ms" in found:
        entry._gen_ms = found["predicted_ms"]
