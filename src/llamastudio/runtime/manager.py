"""The runtime: model configurations → engine processes, placed by the scheduler.

It prepares each model (engine, argv from the engine's capabilities, flags from the user or the
planner, the estimator's per-device reservation), gives the scheduler those reservations and the
machine's budgets, and implements the scheduler's effects: start a supervised process on a free
port and wait for it to be ready, stop it. A process that dies while serving is noticed at once
(its exit is awaited) and reported to the scheduler; the next request starts it again. Start
failures back off (0, 1, 3, 7 … 60 s). Instances are recorded in ``<data>/run/`` so processes a
killed studio left behind are cleaned up at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamastudio.aio import cancel_and_wait
from llamastudio.config import Settings
from llamastudio.engines import keys as engine_keys
from llamastudio.engines.kinds import KINDS
from llamastudio.engines.kinds.base import PORT
from llamastudio.engines.registry import EngineRegistry
from llamastudio.engines.validate import add_external, binary_env, engine_env
from llamastudio.errors import InvalidInput, NotFound, StartFailed, StudioError, TooBusy
from llamastudio.events import EventBus
from llamastudio.fit.planner import GPU_MARGIN, HOST_MARGIN
from llamastudio.fsutil import write_atomic
from llamastudio.hardware.devices import Hardware
from llamastudio.hardware.profiles import resolve
from llamastudio.hub.library import Library
from llamastudio.runtime.instances import cleanup_orphans, file_stem
from llamastudio.runtime.logfile import tail_lines
from llamastudio.runtime.process import EngineProcess, State, free_port, load_timeout
from llamastudio.runtime.scheduler import Lease, ModelSpec, Scheduler
from llamastudio.serving.configs import MAX_TTL, ModelConfig, ModelConfigs, valid_ttl
from llamastudio.serving.launch import Launcher, Prepared, read_header
from llamastudio.serving.names import name_index
from llamastudio.store import Database
from llamastudio.store.models import SettingRow

log = logging.getLogger(__name__)
BUSY_GRACE = 0.05  # seconds a request over a model's concurrency limit waits before 429


@dataclass
class _Failures:
    count: int = 0
    at: float = 0.0
    reason: str = ""

    def backoff(self) -> float:
        return 0.0 if self.count <= 1 else min(60.0, 2.0 ** (self.count - 1) - 1)


def budgets_of(hw: Hardware) -> dict[str, int]:
    """Bytes each device may hold across all models: free memory minus the planner's margins."""
    out = {g.device_name: max(0, g.free - GPU_MARGIN) for g in hw.gpus}
    out["CPU"] = max(0, hw.ram_free - HOST_MARGIN)
    return out


def _safe(name: str) -> str:
    """The stem of the model's log, run record and key file: unique per name (instances.py)."""
    return file_stem(name)


class Runtime:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        bus: EventBus | None = None,
        hardware: Hardware | None = None,
        library: Library | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.bus = bus or EventBus()
        self.hw = hardware or resolve(settings.hardware)
        self._probe_hardware = hardware is None  # re-read at start, once orphans are gone
        self.library = library or Library(db)
        self.engines = EngineRegistry(db, settings.engines_dir)
        self.configs = ModelConfigs(db, self.library, engine_of=lambda cfg: self.launcher.engine_of(cfg))
        self.launcher = Launcher(self.configs, self.engines, self.library)
        self.scheduler = Scheduler(
            _Effects(self), budgets_of(self.hw), [], on_change=self._state_changed, cores=self.hw.cpu_cores
        )
        self.procs: dict[str, EngineProcess] = {}
        self.prepared: dict[str, Prepared] = {}
        self.errors: dict[str, StudioError] = {}  # models that cannot be prepared, and why
        self.names: dict[str, str] = {}  # name, alias, library id → model name
        self.known: list[ModelConfig] = []  # every configuration, as of the last sync
        self.failures: dict[str, _Failures] = {}
        self.started_with: dict[str, list[str]] = {}  # the launch argv each running engine got
        self.run_dir = settings.data_dir / "run"
        self._watchers: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._preloader: asyncio.Task[list[str]] | None = None
        self._synced_at = 0.0
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
        wanted = list(dict.fromkeys([*self.settings.preload, *(c.name for c in self.known if c.preload)]))
        budgets = budgets_of(self.hw)
        used: dict[str, int] = {}
        started: list[str] = []
        for name in wanted:
            try:
                model = await self.resolve(name)
            except StudioError as exc:
                log.warning("preload %s: %s", name, exc.message)
                continue
            reserve = self.prepared[model].reserve
            short = [d for d, n in reserve.items() if used.get(d, 0) + n > budgets.get(d, 0)]
            if short:
                log.warning(
                    "preload %s: skipped, it does not fit on %s next to %s", model, ", ".join(short), started
                )
                continue
            log.info("preload %s: starting", model)
            try:
                await self.load(model)
            except StudioError as exc:
                log.warning("preload %s: %s", model, exc.message)
                continue
            for d, n in reserve.items():
                used[d] = used.get(d, 0) + n
            started.append(model)
        return started

    async def close(self) -> None:
        await cancel_and_wait(self._preloader)
        await cancel_and_wait(self._ticker)
        await self.scheduler.close()
        await asyncio.gather(*(self.stop_model(n) for n in list(self.procs)), return_exceptions=True)
        for t in list(self._watchers):
            t.cancel()

    @property
    def default_ttl(self) -> float:
        """The TTL set in the UI (stored), else ``LLAMASTUDIO_DEFAULT_TTL``."""
        with self.db.session() as s:
            row = s.get(SettingRow, "default_ttl")
        if row is None:
            return self.settings.default_ttl
        if not valid_ttl(row.value):  # e.g. Infinity stored by an older version: would break /ws JSON
            log.warning("ignoring the stored default_ttl %r: not a TTL", row.value)
            return self.settings.default_ttl
        return float(row.value)

    def set_default_ttl(self, seconds: float) -> None:
        if not valid_ttl(seconds):
            raise InvalidInput(f"default_ttl must be a finite number of seconds from 0 to {MAX_TTL}")
        with self.db.session() as s, s.begin():
            row = s.get(SettingRow, "default_ttl")
            if row is None:
                s.add(SettingRow(key="default_ttl", value=seconds))
            else:
                row.value = seconds

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
        budgets = budgets_of(self.hw)
        for dev, free in budgets_of(live).items():
            if dev != "CPU" and dev in budgets:
                budgets[dev] = free + ours.get(dev, 0)
        self.scheduler.set_budgets(budgets, self.hw.cpu_cores)

    def _ensure_engine(self) -> None:
        """Register ``LLAMASTUDIO_LLAMA_SERVER`` as an external engine when none is registered."""
        binary = self.settings.llama_server
        if binary is None or self.engines.all():
            return
        try:
            add_external(self.engines, binary.expanduser().resolve(), name="llama-server (settings)")
        except StudioError as exc:
            log.warning("LLAMASTUDIO_LLAMA_SERVER=%s is not usable: %s", binary, exc.message)

    def cleanup_orphans(self) -> list[int]:
        """Kill engine processes a previous (killed) studio left running and wait for them to
        exit; returns their pids. Blocking (call it in a thread)."""
        return cleanup_orphans(self.run_dir)

    # -- configuration -------------------------------------------------------------------------
    async def sync(self) -> None:
        """Re-read configurations and library; prepare each model; update the scheduler."""
        async with self._sync_lock:
            configs, prepared, errors, names = await asyncio.to_thread(self._prepare_all)
            self.known, self.prepared, self.errors, self.names = configs, prepared, errors, names
            self._synced_at = time.monotonic()
            default_ttl = self.default_ttl
            specs = [
                ModelSpec(
                    name=p.config.name,
                    reserve=p.reserve,
                    ttl=default_ttl if p.config.ttl is None else p.config.ttl,
                    pinned=p.config.pinned,
                    group=p.config.group,
                    max_concurrency=p.config.max_concurrency,
                    max_queue=p.config.max_queue,
                    threads=p.threads,
                )
                for p in prepared.values()
            ]
            self.scheduler.configure(specs)

    def _prepare_all(
        self,
    ) -> tuple[list[ModelConfig], dict[str, Prepared], dict[str, StudioError], dict[str, str]]:
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
        return configs, prepared, errors, name_index(configs)

    async def resolve(self, name: str) -> str:
        """The configured name for a requested name, alias or library id (404 when unknown)."""
        found = self.names.get(name)
        if found is None and time.monotonic() - self._synced_at > 2.0:
            await self.sync()  # a model downloaded or configured since
            found = self.names.get(name)
        if found is None:
            raise NotFound(f"model {name!r} not found: see GET /v1/models")
        if found in self.errors:
            raise self.errors[found]
        return found

    def prepare(self, cfg: ModelConfig, hw: Hardware | None = None) -> Prepared:
        """The launch spec of ``cfg`` on this machine (or ``hw``). Blocking: header read."""
        return self.launcher.prepare(cfg, hw or self.hw)

    def preview(self, name: str) -> Prepared:
        """What starting ``name`` would run; raises the reason it cannot be prepared."""
        return self.prepare(self.configs.get(name))

    def import_configs(
        self, fmt: str, text: str, permit: Callable[[ModelConfig], None] = lambda _cfg: None
    ) -> list[ModelConfig]:
        """Parse, check every configuration (and that its model exists; ``permit`` raises for one
        the caller may not store), then store them all or none, in one transaction. Blocking (file
        and database work): callers on the event loop run it in a thread."""
        configs = self.launcher.parse_import(fmt, text)
        for cfg in configs:
            permit(cfg)
        return self.configs.put_many(configs)

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
        return running and prep is not None and self.started_with.get(name) != prep.argv

    async def reload(self, name: str) -> dict[str, Any]:
        """Restart a running model with its current configuration after its requests in flight
        (requests arriving meanwhile wait for the new engine); a stopped model stays stopped."""
        model = await self.resolve(name)
        if self.status(model)["state"] in ("ready", "starting"):
            await self.scheduler.unload(model)
            await self.load(model)
        return self.status(model)

    async def unload(self, name: str) -> None:
        await self.scheduler.unload(await self.resolve(name))

    async def unload_all(self) -> list[str]:
        names = [n for n, e in self.scheduler.entries.items() if e.state != "stopped"]
        await asyncio.gather(*(self.scheduler.unload(n) for n in names))
        return names

    async def delete_config(self, name: str) -> None:
        """Delete a stored configuration; its engine is stopped first (after its requests in
        flight), so no process outlives the configuration it ran (issue 18 #10)."""
        if all(c.name != name for c in await asyncio.to_thread(self.configs.stored)):
            raise NotFound(f"model {name!r} has no stored configuration")
        await self._drain_and_stop([name])
        await asyncio.to_thread(self.configs.delete, name)
        await self.sync()  # a request that raced in meanwhile: the scheduler unloads it again

    async def stop_users_of(self, library_id: str) -> list[str]:
        """Stop (after their requests in flight) every model that runs a file of the library
        model ``library_id`` (or under that added path), before the files go; returns them."""
        names = await asyncio.to_thread(self._users_of, library_id)
        await self._drain_and_stop(names)
        return names

    def _users_of(self, library_id: str) -> list[str]:
        roots: set[Path] = set()
        with contextlib.suppress(NotFound):
            local = self.library.get(library_id)
            roots.update(Path(f).resolve() for f in [local.path, *local.files])
        if "/" in library_id:
            roots.add(Path(library_id).expanduser().resolve())
        users = []
        for name, p in self.prepared.items():
            if p.model_path is None:
                continue
            path = p.model_path.resolve()
            if path in roots or any(r in path.parents for r in roots):
                users.append(name)
        return users

    async def _drain_and_stop(self, names: list[str]) -> None:
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

    # -- scheduler effects (through _Effects) ---------------------------------------------------
    async def stop_model(self, model: str) -> None:
        proc = self.procs.get(model)
        if proc is None:
            return
        await proc.stop()
        (self.run_dir / f"{_safe(model)}.json").unlink(missing_ok=True)

    async def start_model(self, model: str) -> None:
        fail = self.failures.setdefault(model, _Failures())
        wait = fail.at + fail.backoff() - time.monotonic()
        if fail.count and wait > 0:
            raise StartFailed(
                f"{model} failed to start {fail.count}× (last: {fail.reason}); next try in {wait:.0f}s",
                retry_after=max(1, round(wait)),
            )
        prep = self.prepared.get(model)
        if prep is None:
            raise self.errors.get(model) or NotFound(f"model {model!r} is not configured")
        port = free_port()
        argv = [a.replace(PORT, str(port)) for a in prep.argv]
        # engines get neither the studio's keys nor its tokens; the configuration's env still applies
        env = binary_env(Path(argv[0])) if prep.engine else engine_env()
        env.update(prep.config.env)
        old = self.procs.get(model)
        if old is not None and old.state not in (State.STOPPED, State.FAILED):
            await old.stop()
        kind = KINDS[prep.kind]
        # only the gateway may call it
        key = (
            engine_keys.issue(prep.engine, self.run_dir, _safe(model))
            if kind.takes_key(prep.engine)
            else None
        )
        if key is not None:
            argv += key.args
        proc = EngineProcess(
            model,
            argv,
            port,
            self.settings.logs_dir / f"{_safe(model)}.log",
            env=env,
            timeout=load_timeout(prep.model_bytes),
            lines_hook=lambda line: self.bus.publish({"type": "log", "model": model, "line": line}),
            api_key=key.key if key else None,
            fatal=kind.fatal,
            ready_path=kind.ready_path,
        )
        self.procs[model] = proc
        self.started_with[model] = list(prep.argv)
        try:
            await proc.ensure_ready()
        except StartFailed as exc:
            fail.count, fail.at, fail.reason = fail.count + 1, time.monotonic(), proc.reason or exc.message
            self.bus.publish({"type": "model", "model": model, "state": "failed", "reason": fail.reason})
            raise
        finally:  # read while llama-server parsed its arguments, long before /health said ready
            if key is not None:
                key.remove()
        fail.count = 0
        assert proc.proc is not None
        record = {"pid": proc.proc.pid, "exe": argv[0], "model": model, "port": port}
        with contextlib.suppress(StudioError):
            write_atomic(self.run_dir / f"{_safe(model)}.json", json.dumps(record).encode())
        for job in (self._watch(model, proc), proc.watch_health(self.settings.hung_after)):
            watcher = asyncio.create_task(job)
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, model: str, proc: EngineProcess) -> None:
        assert proc.proc is not None
        await proc.proc.wait()
        if proc.state == State.READY:  # not stopped by us: it died while serving
            proc.check_alive()
            log.warning("%s: %s", model, proc.reason)
            self.bus.publish({"type": "model", "model": model, "state": "failed", "reason": proc.reason})
            (self.run_dir / f"{_safe(model)}.json").unlink(missing_ok=True)
            self.scheduler.died(model)

    def _state_changed(self, model: str, state: str) -> None:
        self.bus.publish({"type": "model", "model": model, "state": state})

    # -- views ---------------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        entry = self.scheduler.entries.get(name)
        proc = self.procs.get(name)
        prep = self.prepared.get(name)
        state: str = entry.state if entry else "stopped"
        reason = None
        if proc is not None and proc.state == State.FAILED and state == "stopped":
            state, reason = "failed", proc.reason
        elif name in self.errors:
            state, reason = "unavailable", self.errors[name].message
        fail = self.failures.get(name)
        now = time.monotonic()
        note = entry.note if entry and state in ("stopped", "stopping") else None
        if state == "starting" and fail and fail.count:
            note = f"restarting (attempt {fail.count + 1})"
        return {
            "name": name,
            "state": state,
            "note": note,  # unloaded by TTL, evicted for whom, restarting (attempt n)
            "reason": reason or (fail.reason if fail and fail.count else None),
            "in_flight": entry.in_flight if entry else 0,
            "queued": len(entry.waiters) if entry else 0,
            "idle_s": round(now - entry.last_used, 1) if entry and entry.last_used else None,
            "pid": proc.pid if proc and state in ("starting", "ready", "stopping") else None,
            "port": proc.port if proc and state in ("starting", "ready") else None,
            "engine": prep.engine.id if prep and prep.engine else None,
            "memory": prep.reserve if prep else {},
            "pinned": entry.spec.pinned if entry else False,
            "ttl": entry.spec.ttl if entry else None,
            "max_concurrency": entry.spec.max_concurrency if entry else 0,
        }

    def models(self) -> list[dict[str, Any]]:
        return [
            {**self.status(c.name), "model": c.model, "aliases": c.aliases, "configured": c.configured}
            for c in self.known
        ]

    def running(self) -> list[dict[str, Any]]:
        return [
            self.status(n)
            for n, e in self.scheduler.entries.items()
            if e.state != "stopped" or (self.procs.get(n) and self.procs[n].state == State.FAILED)
        ]

    async def logs(self, name: str, tail: int = 200) -> list[str]:
        """The last ``tail`` lines of the model's engine log (rotated files included), read
        backwards from the end in a thread: a 300 MB log costs what its tail costs."""
        proc = self.procs.get(name)
        path = proc.log_path if proc is not None else self.log_path(name)
        return await asyncio.to_thread(tail_lines, path, tail)

    def log_path(self, name: str) -> Path:
        """Where the engine of model ``name`` logs (rotated files beside it: ``logfile.py``)."""
        return self.settings.logs_dir / f"{_safe(name)}.log"

    def engine_in_use(self, engine_id: str) -> bool:
        return any(
            p.engine is not None and p.engine.id == engine_id and self.status(n)["state"] != "stopped"
            for n, p in self.prepared.items()
        )


class _Effects:
    """The scheduler's effects, bound to the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def start(self, model: str) -> None:
        await self.runtime.start_model(model)

    async def stop(self, model: str) -> None:
        await self.runtime.stop_model(model)
