"""The runtime: model configurations → engine processes, placed by the scheduler.

It prepares each model (engine, argv from the engine's capabilities, flags from the user or the
planner, the estimator's per-device reservation), gives the scheduler those reservations and the
machine's budgets (``budgets.py``), and hands it its effects (``effects.py``: start a supervised
process on a free port and wait until it is ready, stop it; a death while serving is reported at
once and the next request starts it again; failed starts back off). Every llama.cpp load is
measured (``measured.py``): once its key has a measurement, that figure replaces the estimate in
the model's reservation (``fit/measured.py``). Requests lease a ready engine
through ``acquire``. Instances are recorded in ``<data>/run/`` so processes a killed studio left
behind are cleaned up at the next start. What it knows about a model is read as plain facts
(``facts``, ``snapshot``), which ``services/`` turns into the status snapshots the faces show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path

from llamastudio.aio import cancel_and_wait
from llamastudio.config import Settings
from llamastudio.engines import pyengines
from llamastudio.engines.registry import LLAMA_CPP, EngineRegistry
from llamastudio.engines.validate import add_external
from llamastudio.errors import NotFound, StartFailed, StudioError, TooBusy
from llamastudio.events import EventBus
from llamastudio.fit.measured import Measurement
from llamastudio.hardware.devices import Hardware
from llamastudio.hardware.profiles import resolve
from llamastudio.hub.library import Library
from llamastudio.jobs import JobManager
from llamastudio.runtime.budgets import budgets_of, follow_gpus, short_of
from llamastudio.runtime.effects import ProcessEffects
from llamastudio.runtime.facts import ModelFacts
from llamastudio.runtime.instances import cleanup_orphans, file_stem
from llamastudio.runtime.measured import Learner, MeasuredStore
from llamastudio.runtime.process import EngineProcess, State
from llamastudio.runtime.scheduler import Counters, Lease, ModelSpec, Scheduler
from llamastudio.serving import stored
from llamastudio.serving.configs import ModelConfig, ModelConfigs
from llamastudio.serving.launch import Launcher, Prepared, read_header
from llamastudio.serving.names import name_index
from llamastudio.store import Database

log = logging.getLogger(__name__)
BUSY_GRACE = 0.05  # seconds a request over a model's concurrency limit waits before 429


class Runtime:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        bus: EventBus | None = None,
        hardware: Hardware | None = None,
        library: Library | None = None,
        jobs: JobManager | None = None,
    ) -> None:
        """``jobs``: where each model load is tracked as a ``load`` job (None: not tracked)."""
        self.settings = settings
        self.db = db
        self.bus = bus or EventBus()
        self.hw = hardware or resolve(settings.hardware)
        self._probe_hardware = hardware is None  # re-read at start, once orphans are gone
        self.library = library or Library(db)
        self.engines = EngineRegistry(db, settings.engines_dir)
        self.configs = ModelConfigs(
            db, self.library, engine_of=lambda cfg, fmt: self.launcher.engine_of(cfg, fmt)
        )
        self.launcher = Launcher(self.configs, self.engines, self.library, settings.pin_threads)
        self.run_dir = settings.data_dir / "run"
        self.learner = Learner(MeasuredStore(db), self._measured)
        self.effects = ProcessEffects(
            settings, self.bus, self.run_dir, self._spec_of, self._died, jobs, learner=self.learner
        )
        self.scheduler = Scheduler(
            self.effects, budgets_of(self.hw), [], on_change=self._state_changed, cores=self.hw.cpu_cores
        )
        self.procs = self.effects.procs  # the process table: the effects own it
        self.prepared: dict[str, Prepared] = {}
        self.errors: dict[str, StudioError] = {}  # models that cannot be prepared, and why
        self.names: dict[str, str] = {}  # name, alias, library id → model name
        self.known: list[ModelConfig] = []  # every configuration, as of the last sync
        self._ticker: asyncio.Task[None] | None = None
        self._preloader: asyncio.Task[list[str]] | None = None
        self._synced_at = 0.0
        self._default_ttl = settings.default_ttl
        self._sync_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # engines a killed studio left behind hold memory: kill them before reading free memory
        await asyncio.to_thread(self.cleanup_orphans)
        if self._probe_hardware:
            self.hw = await asyncio.to_thread(resolve, self.settings.hardware)
        self.scheduler.set_budgets(budgets_of(self.hw), self.hw.cpu_cores)
        await asyncio.to_thread(self._ensure_engine)
        await self.sync()
        await self.scheduler.start()
        self._ticker = asyncio.create_task(self._tick())
        self._preloader = asyncio.create_task(self.preload())

    async def preload(self) -> list[str]:
        """Start the models to preload (``LLAMASTUDIO_PRELOAD`` in its order, then configurations
        with ``preload: true``), one after another; a model that does not fit next to those
        before it is skipped with a warning (preloading never evicts a preloaded model).
        Returns the models started."""
        wanted = dict.fromkeys([*self.settings.preload, *(c.name for c in self.known if c.preload)])
        budgets, used, started = budgets_of(self.hw), dict[str, int](), list[str]()
        for name in wanted:
            try:
                model = await self.resolve(name)
                reserve = self.prepared[model].reserve
                if short := short_of(reserve, used, budgets):
                    why = f"it does not fit on {', '.join(short)} next to {started}"
                    log.warning("preload %s: skipped, %s", model, why)
                    continue
                log.info("preload %s: starting", model)
                await self.load(model)
            except StudioError as exc:
                log.warning("preload %s: %s", name, exc.message)
                continue
            for d, n in reserve.items():
                used[d] = used.get(d, 0) + n
            started.append(model)
        return started

    async def close(self) -> None:
        await cancel_and_wait(self._preloader)
        await cancel_and_wait(self._ticker)
        await self.scheduler.close()
        await self.effects.close()
        await self.learner.close()

    async def _tick(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(1.0)
            self.scheduler.tick()
            n += 1
            if n % 5 == 0:  # configurations edited outside this process (CLI), new downloads
                with contextlib.suppress(StudioError):
                    await self.sync()
                if self._probe_hardware and self.hw.gpus:
                    await self.refresh_gpu_budgets()

    async def refresh_gpu_budgets(self) -> None:
        """Follow the GPUs' free memory (NVML / amdsmi): another program taking or freeing VRAM
        changes what the scheduler may place. A GPU's budget is its free memory now plus what
        the studio's own loaded engines reserve on it (their use is not "taken by others"). RAM
        stays as measured at start: mmap'd weights count as reclaimable cache in "available"."""
        try:
            live = await asyncio.to_thread(resolve, None)
        except Exception:  # a probe that failed once (driver reset): keep the last budgets
            log.warning("GPU probe failed; keeping the last memory budgets", exc_info=True)
            return
        ours: dict[str, int] = {}
        for name, st in self.scheduler.snapshot().items():
            prep = self.prepared.get(name)
            if st.state != "stopped" and prep is not None:
                for dev, n in prep.reserve.items():
                    ours[dev] = ours.get(dev, 0) + n
        self.scheduler.set_budgets(follow_gpus(self.hw, live, ours), self.hw.cpu_cores)

    def _ensure_engine(self) -> None:
        """Register ``LLAMASTUDIO_LLAMA_SERVER`` as an external engine when none is registered."""
        families = {e.family for e in self.engines.all()}
        binary = self.settings.llama_server
        if binary is not None and LLAMA_CPP not in families:
            try:
                add_external(self.engines, binary.expanduser().resolve(), name="llama-server (settings)")
            except StudioError as exc:
                log.warning("LLAMASTUDIO_LLAMA_SERVER=%s is not usable: %s", binary, exc.message)
        # the seed's LMDEPLOY_BIN, else an `lmdeploy` on PATH
        cli = self.settings.lmdeploy_bin or (Path(found) if (found := shutil.which("lmdeploy")) else None)
        if cli is not None and "lmdeploy" not in families:
            try:
                python = pyengines.python_of(cli)
                family = pyengines.FAMILIES["lmdeploy"]
                pyengines.register(self.engines, family, python, "external", cli.parent, cli=cli)
            except StudioError as exc:
                log.warning("LMDEPLOY_BIN=%s is not usable: %s", cli, exc.message)

    def cleanup_orphans(self) -> list[int]:
        """Kill engine processes a previous (killed) studio left running and wait for them to
        exit; returns their pids. Blocking (call it in a thread)."""
        return cleanup_orphans(self.run_dir)

    # -- configuration -------------------------------------------------------------------------
    async def sync(self) -> None:
        """Re-read configurations and library; prepare each model; update the scheduler."""
        async with self._sync_lock:
            configs, prepared, errors, names, default_ttl, found = await asyncio.to_thread(self._prepare_all)
            self.known, self.prepared, self.errors, self.names = configs, prepared, errors, names
            self._synced_at = time.monotonic()
            self._default_ttl = default_ttl
            for m in found.values():
                self._remember(m)
            for p in prepared.values():
                self._with_measured(p)
            self._configure()

    def _configure(self) -> None:
        """Give the scheduler every prepared model's spec (its reservation included)."""
        ttl = self._default_ttl
        specs = [
            ModelSpec(
                name=p.config.name,
                reserve=p.reserve,
                ttl=ttl if p.config.ttl is None else p.config.ttl,
                pinned=p.config.pinned,
                group=p.config.group,
                swap=p.config.group_swap,
                exclusive=p.config.group_exclusive,
                persistent=p.config.group_persistent,
                max_concurrency=p.config.max_concurrency,
                max_queue=p.config.max_queue,
                threads=p.threads,
            )
            for p in self.prepared.values()
        ]
        self.scheduler.configure(specs)

    # -- measured memory (on the loop; the learner records in threads) ---------------------------
    def _remember(self, m: Measurement) -> None:
        """Keep ``m`` unless a newer record of its key is known (a sync may read a row older than
        the one a load has just written)."""
        old = self.learner.known.get(m.key)
        newer = m.updated_at is not None and old is not None and old.updated_at is not None
        if old is None or (newer and m.updated_at >= old.updated_at):  # type: ignore[operator]
            self.learner.known[m.key] = m

    def _with_measured(self, p: Prepared) -> None:
        if p.memory is not None:
            p.memory.measured = self.learner.known.get(p.memory.key)
            p.reserve = p.memory.reserve()

    def _measured(self, m: Measurement) -> None:
        """A load was measured: every model of that key reserves the measured figure from now on
        (a running one too: that is what it holds)."""
        self._remember(m)
        changed = False
        for p in self.prepared.values():
            if p.memory is not None and p.memory.key == m.key:
                before = p.reserve
                self._with_measured(p)
                changed = changed or p.reserve != before
        if changed:
            self._configure()

    def measured_for(self, p: Prepared) -> Prepared:
        """``p`` with its key's measurement, if any (blocking: a database read; for previews)."""
        if p.memory is not None:  # the database, not the loop's cache: this runs in a thread
            p.memory.measured = self.learner.store.get(p.memory.key)
            p.reserve = p.memory.reserve()
        return p

    def drift(self) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
        """Per prepared model with a comparable measurement: (estimate − measured) / measured per
        device; and per model, the loads measured with a drift over 5 % since the studio started."""
        ratios = {
            name: p.memory.measured.drift()
            for name, p in self.prepared.items()
            if p.memory is not None and p.memory.measured is not None and p.memory.measured.comparable
        }
        return {n: r for n, r in ratios.items() if r}, dict(self.learner.drift_events)

    def _prepare_all(
        self,
    ) -> tuple[
        list[ModelConfig],
        dict[str, Prepared],
        dict[str, StudioError],
        dict[str, str],
        float,
        dict[str, Measurement],
    ]:
        library = self.library.models(with_facts=False)  # listed once, not once per model
        configs = self.configs.all(library=library)
        done: dict[str, Prepared] = {}
        errors: dict[str, StudioError] = {}
        try:
            # by file: configurations of one model share one header read (launch.read_header)
            for cfg in sorted(configs, key=lambda c: c.model):
                old = self.prepared.get(cfg.name)
                try:
                    if old is not None and self.launcher.fresh(old, cfg):
                        done[cfg.name] = old
                        continue
                    done[cfg.name] = self.launcher.prepare(cfg, self.hw, library)
                except StudioError as exc:
                    errors[cfg.name] = exc
        finally:
            read_header.cache_clear()  # headers hold whole vocabularies: dropped after a sync
        prepared = {c.name: done[c.name] for c in configs if c.name in done}
        ttl = stored.default_ttl(self.db, self.settings.default_ttl)
        keys = sorted({p.memory.key for p in prepared.values() if p.memory is not None})
        return configs, prepared, errors, name_index(configs), ttl, self.learner.store.get_many(keys)

    def lookup(self, name: str) -> str | None:
        """The configured name for a name, alias or library id, as of the last sync."""
        return self.names.get(name)

    async def resolve(self, name: str, usable: bool = True) -> str:
        """The configured name for a requested name, alias or library id (404 when unknown);
        ``usable``: raise why it cannot run, if it cannot (not for reading its log)."""
        found = self.names.get(name)
        if found is None and time.monotonic() - self._synced_at > 2.0:
            await self.sync()  # a model downloaded or configured since
            found = self.names.get(name)
        if found is None:
            raise NotFound(f"model {name!r} not found: see GET /v1/models")
        if usable and found in self.errors:
            raise self.errors[found]
        return found

    # -- serving -------------------------------------------------------------------------------
    async def acquire(self, name: str) -> tuple[Lease, EngineProcess]:
        model = await self.resolve(name)
        try:
            lease = await self.scheduler.acquire(model)
        except TooBusy:
            # a client's previous request may be finishing right now: give it a moment
            await asyncio.sleep(BUSY_GRACE)
            lease = await self.scheduler.acquire(model)
        proc = self.procs.get(model)
        if proc is not None and proc.state == State.FAILED:
            # killed (kill -9) as the scheduler handed it out: whoever marked it failed has posted
            # its death already, so asking once more starts it again instead of failing this one
            lease.release()
            lease = await self.scheduler.acquire(model)
            proc = self.procs.get(model)
        if proc is None or proc.state != State.READY:
            lease.release()
            raise StartFailed(f"{model} is not running")
        return lease, proc

    async def load(self, name: str) -> EngineProcess:
        """Start the model (a user's start): it is placed like a request but holds nothing, so
        it does not wait for CPU threads another model is computing with."""
        model = await self.resolve(name)
        await self.scheduler.load(model)
        proc = self.procs.get(model)
        if proc is not None and proc.state == State.FAILED:  # killed as it became ready: once more
            await self.scheduler.load(model)
            proc = self.procs.get(model)
        if proc is None or proc.state != State.READY:
            raise StartFailed(f"{model} is not running")
        return proc

    def reload_needed(self, name: str) -> bool:
        """Whether the running engine of ``name`` was started with another command than its
        configuration now gives (a saved change waits for ``reload``)."""
        proc, prep = self.procs.get(name), self.prepared.get(name)
        running = proc is not None and proc.state in (State.STARTING, State.READY)
        return running and prep is not None and self.effects.started_with.get(name) != prep.argv

    async def unload(self, name: str) -> None:
        await self.scheduler.unload(await self.resolve(name))

    async def unload_all(self) -> list[str]:
        names = [n for n, st in self.scheduler.snapshot().items() if st.state != "stopped"]
        await asyncio.gather(*(self.scheduler.unload(n) for n in names))
        return names

    async def drain_and_stop(self, names: list[str]) -> None:
        """Stop each model once its requests in flight have finished (unknown ones: nothing runs)."""

        async def one(name: str) -> None:
            with contextlib.suppress(NotFound):  # not known to the scheduler: nothing runs
                await self.scheduler.unload(name)

        await asyncio.gather(*(one(n) for n in names))

    def died(self, name: str) -> None:
        """Called when a relay saw the upstream connection break: check the process now."""
        proc = self.procs.get(name)
        if proc is not None:
            proc.check_alive()
            if proc.state == State.FAILED:
                self.scheduler.died(name)

    # -- for the effects (process.py machinery lives in effects.py) -----------------------------
    def _spec_of(self, model: str) -> Prepared:
        prep = self.prepared.get(model)
        if prep is None:
            raise self.errors.get(model) or NotFound(f"model {model!r} is not configured")
        return prep

    def _died(self, model: str) -> None:
        self.scheduler.died(model)

    def _state_changed(self, model: str, state: str) -> None:
        self.bus.publish({"type": "model", "model": model, "state": state})

    # -- reading: on the loop that owns the scheduler (services/ turns these into snapshots) ------
    def facts(self, name: str) -> ModelFacts:
        """What the runtime knows about model ``name`` right now."""
        proc, prep = self.procs.get(name), self.prepared.get(name)
        fail, err = self.effects.failures.get(name), self.errors.get(name)
        return ModelFacts(
            name=name,
            scheduled=self.scheduler.snapshot_of(name),
            process=proc.state if proc else None,
            pid=proc.pid if proc else None,
            port=proc.port if proc else None,
            process_reason=proc.reason if proc else None,
            engine=prep.engine.id if prep and prep.engine else None,
            reserve=dict(prep.reserve) if prep else {},
            model_path=prep.model_path if prep else None,
            error=err.message if err else None,
            failures=fail.count if fail else 0,
            failure_reason=fail.reason if fail else "",
            reload_needed=self.reload_needed(name),
        )

    def snapshot(self) -> list[ModelFacts]:
        """Facts of every configuration (as of the last sync), then of any other model the
        scheduler still knows (one whose configuration is gone, draining)."""
        return [
            self.facts(n) for n in dict.fromkeys([*(c.name for c in self.known), *self.scheduler.entries])
        ]

    def counters(self) -> Counters:
        return self.scheduler.counters()

    def log_path(self, name: str) -> Path:
        """Where the engine of model ``name`` logs (rotated files beside it: ``logfile.py``)."""
        return self.settings.logs_dir / f"{file_stem(name)}.log"
