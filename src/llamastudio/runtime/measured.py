"""Learning from every load: record what llama-server allocated, next to the estimate.

Where the figures come from (llama.cpp b11434; see ``fit/measured.py`` for the key and figures):

- **Buffers, from llama-server's log.** It logs every buffer it allocates (weights, KV, recurrent
  state, output, compute; projector and draft model) only at ``-lv 4`` ("trace": llama.cpp's own
  INFO messages map to it). At the default ``-lv 3`` a load prints ~8 lines and none of them; its
  exit-time memory breakdown is also a trace message, and comes too late. ``-lv 4`` costs nothing
  at load but ~4× the lines per request for the process's whole life (measured: 7 → 28 lines,
  0.8 → 2.8 KB per completion, plus one line per cached prompt), and llama-server cannot lower its
  verbosity while it runs. So a load whose key has **no measurement yet** runs with
  ``LLAMA_ARG_LOG_VERBOSITY=4`` in its environment (the argv, and the command the faces show, stay
  as configured; a verbosity the configuration sets itself wins); later loads of that key run at
  the default verbosity. Buffer lines are read from *every* load that prints them (a
  configuration with ``-lv 4`` in its flags is measured at each load).
- **GPU memory of the process, from NVML**, on every load: when it is ready and again when it
  is stopped (CUDA pools grow while serving); the peak is kept. It includes the CUDA context and
  pools, which no buffer line shows.

Recording runs beside the start (never on the scheduler's owner task, never in the gateway's
relay): the start is reported ready first, then the lines are parsed, NVML read and the row
written in threads; the runtime is then told (``on_measured``) and re-places with the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import select

from llamastudio.fit.measured import (
    Logged,
    Measurement,
    MemoryPlan,
    measure,
    parse_logged,
    ready_line,
    relevant,
    totals,
)
from llamastudio.hardware.gpu_process import process_memory
from llamastudio.store import Database
from llamastudio.store.models import MeasuredMemoryRow

log = logging.getLogger(__name__)
VERBOSITY_ENV = "LLAMA_ARG_LOG_VERBOSITY"  # llama.cpp's environment name of -lv
MAX_LINES = 4000  # relevant lines kept per load (a load logs a few dozen)
LOG_WAIT = 10.0  # seconds to wait for the load's last lines after /health said ready


class MeasuredStore:
    """The ``measured_memory`` table: one row per load key, each write one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get_many(self, keys: list[str]) -> dict[str, Measurement]:
        if not keys:
            return {}
        with self.db.session() as s:
            rows = s.scalars(select(MeasuredMemoryRow).where(MeasuredMemoryRow.key.in_(keys)))
            return {r.key: _from_row(r) for r in rows}

    def get(self, key: str) -> Measurement | None:
        return self.get_many([key]).get(key)

    def save(self, m: Measurement) -> None:
        """Insert or replace the row of ``m.key`` (atomic: one transaction)."""
        with self.db.session() as s, s.begin():
            s.merge(
                MeasuredMemoryRow(
                    key=m.key,
                    spec=m.spec,
                    model=m.model[:256],
                    estimated=m.estimated,
                    measured=m.measured,
                    mapped_extra=m.mapped_extra,
                    process=m.process,
                    comparable=m.comparable,
                    note=m.note,
                    loads=m.loads,
                    measured_at=m.measured_at or _now(),
                    updated_at=m.updated_at or _now(),
                )
            )


def _from_row(r: MeasuredMemoryRow) -> Measurement:
    return Measurement(
        key=r.key,
        spec=dict(r.spec),
        model=r.model,
        estimated={d: {c: int(n) for c, n in cats.items()} for d, cats in r.estimated.items()},
        measured={d: {c: int(n) for c, n in cats.items()} for d, cats in r.measured.items()},
        mapped_extra=r.mapped_extra,
        process={d: int(n) for d, n in r.process.items()},
        comparable=r.comparable,
        note=r.note,
        loads=r.loads,
        measured_at=_aware(r.measured_at),
        updated_at=_aware(r.updated_at),
    )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite drops the zone


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LoadLines:
    """The lines of one load that matter to its measurement, fed from the output reader."""

    lines: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)  # the load's last line was seen

    def feed(self, line: str) -> None:
        if self.done.is_set():
            return
        if relevant(line) and len(self.lines) < MAX_LINES:
            self.lines.append(line)
        elif ready_line(line):
            self.done.set()


class Learner:
    """Measures loads and records them; the runtime's effects call it around each start and stop."""

    def __init__(self, store: MeasuredStore, on_measured: Callable[[Measurement], None]) -> None:
        self.store = store
        self.on_measured = on_measured
        self.known: dict[str, Measurement] = {}  # by key: what the runtime has read or recorded
        self.drift_events: dict[str, int] = {}  # model → loads measured with a drift, since start
        self._tasks: set[asyncio.Task[None]] = set()
        self._writing = asyncio.Lock()  # one read-modify-write of a row at a time

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def engine_env(self, plan: MemoryPlan) -> dict[str, str]:
        """What a start of ``plan``'s key adds to the engine's environment: the verbosity that logs
        buffers while its key has no measurement (see the module docstring)."""
        return {} if self._measured(plan) else {VERBOSITY_ENV: "4"}

    def _measured(self, plan: MemoryPlan) -> bool:
        m = self.known.get(plan.key) or plan.measured
        return m is not None and bool(m.measured) and m.comparable  # else: learn at the next load

    def loaded(self, model: str, plan: MemoryPlan, lines: LoadLines, pid: int, visible: str | None) -> None:
        """A load of ``plan`` is ready: measure it beside the start (never awaited by it)."""
        task = asyncio.create_task(self._record(model, plan, lines, pid, visible))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stopping(self, model: str, plan: MemoryPlan, pid: int, visible: str | None) -> None:
        """Before a ready engine is stopped: what its GPUs hold now (CUDA pools grow while serving)."""
        held = await self._gpu(model, pid, visible)
        if held:
            with contextlib.suppress(Exception):  # a failed write must never hold up a stop
                await self._update(model, plan, None, held)

    async def _gpu(self, model: str, pid: int, visible: str | None) -> dict[str, int]:
        """What the GPUs hold for ``pid`` ({} on CPU machines, or when NVML fails: never fatal)."""
        try:  # NVML is initialised in the thread too (slow on some drivers)
            return await asyncio.wait_for(asyncio.to_thread(process_memory, pid, None, visible), 5.0)
        except Exception:
            log.debug("%s: reading NVML failed", model, exc_info=True)
            return {}

    async def _record(
        self, model: str, plan: MemoryPlan, lines: LoadLines, pid: int, visible: str | None
    ) -> None:
        with contextlib.suppress(TimeoutError):  # then measure what was read
            await asyncio.wait_for(lines.done.wait(), LOG_WAIT)
        try:
            logged = parse_logged(list(lines.lines))
            held = await self._gpu(model, pid, visible)
            await self._update(model, plan, logged, held, load=True)
        except Exception:  # a measurement failing must never fail the model
            log.exception("%s: recording the measured memory failed", model)

    async def _update(
        self,
        model: str,
        plan: MemoryPlan,
        logged: Logged | None,
        held: dict[str, int],
        load: bool = False,
    ) -> None:
        async with self._writing:
            await self._write(model, plan, logged, held, load)

    async def _write(
        self, model: str, plan: MemoryPlan, logged: Logged | None, held: dict[str, int], load: bool
    ) -> None:
        old = self.known.get(plan.key) or await asyncio.to_thread(self.store.get, plan.key)
        now = _now()
        new: Measurement | None
        if logged is not None:
            new = measure(plan, model, logged, now)
            if old is not None:
                new.loads = old.loads + 1
                new.process = dict(old.process)
        elif old is not None:
            new = replace(old, model=model, loads=old.loads + (1 if load else 0), updated_at=now)
            new.process = dict(old.process)
        elif held:  # NVML only: no buffers to compare; the process's figures still count
            new = Measurement(
                plan.key,
                plan.spec,
                model,
                plan.estimated,
                {},
                plan.mapped_extra,
                measured_at=now,
                updated_at=now,
            )
        else:
            if load:
                log.info("%s: no buffer sizes in its log (verbosity below 4): nothing measured", model)
            return
        for dev, n in held.items():
            new.process[dev] = max(n, new.process.get(dev, 0))
        await asyncio.to_thread(self.store.save, new)
        self.known[plan.key] = new
        if logged is not None:
            self._report(model, new)
        self.on_measured(new)

    def _report(self, model: str, m: Measurement) -> None:
        if not m.comparable:
            log.warning("%s: measured memory not used for placement: %s", model, m.note)
            return
        drifted = m.drifted()
        if drifted:
            self.drift_events[model] = self.drift_events.get(model, 0) + 1
        est, got = totals(m.estimated), totals(m.measured)
        for dev, r in sorted(drifted.items()):
            log.warning(
                "%s: estimate drift on %s: estimated %.2f MiB, measured %.2f MiB (%+.1f %%)%s",
                model, dev, est.get(dev, 0) / 2**20, got[dev] / 2**20, r * 100,
                f"; {m.note}" if m.note else "",
            )  # fmt: skip
        if not drifted:
            log.info("%s: measured memory matches the estimate within 5 %%", model)
