"""The one façade the faces call: API routes, CLI commands and the gateway.

Every operation a face needs — configure, preview, plan, start, stop, reload, read status, logs,
settings, import/export, the library and engine changes that must stop models first — is a
method here; no face touches the runtime, the scheduler, the process table or the database.

Threads and the loop: every method that reads the runtime's state is ``async`` and runs on the
event loop that owns the scheduler (so no face reads it from a threadpool); blocking work inside
(database, model headers, file scans) runs in ``asyncio.to_thread``. Snapshots are pydantic models
(``snapshots.py``) built from the runtime's plain facts by pure functions (``status.py``).

The gateway's hot path is the runtime's own: ``acquire`` and ``died`` are the runtime's bound
methods, so relaying a request costs no extra call.

``offline=True`` (the CLI when no studio serves the data directory): no scheduler runs, so
configurations are stored and read directly, and nothing is started, stopped or re-synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from llamastudio.engines.kinds import Traits
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.fit.planner import Goal
from llamastudio.hardware.devices import Hardware
from llamastudio.hardware.profiles import resolve_named
from llamastudio.hub.library import LocalModel
from llamastudio.runtime.budgets import budgets_of
from llamastudio.runtime.logfile import MAX_TAIL, tail_lines
from llamastudio.runtime.manager import Runtime
from llamastudio.services import status as views
from llamastudio.services import swapimport
from llamastudio.services.configwatch import ConfigWatch
from llamastudio.services.peers import PeerService
from llamastudio.services.snapshots import (
    AutoConfig,
    CommandView,
    ConfigView,
    DatabaseStatus,
    DraftCandidate,
    GatewayModel,
    LogTail,
    MemoryEstimate,
    MetricsSnapshot,
    ModelStatus,
    SavedConfigView,
    ServedModel,
)
from llamastudio.serving import stored, swapstate
from llamastudio.serving.configs import ModelConfig, validate
from llamastudio.serving.launch import Prepared
from llamastudio.store.db import ping
from llamastudio.workers.registry import WorkerService

Permit = Callable[[ModelConfig], None]  # raises for a configuration the caller may not store
NULLABLE = frozenset(
    {"engine_id", "command", "ttl", "group", "reserve"}
    | {"title", "description", "use_model_name", "check_endpoint", "start_timeout", "cmd_stop", "proxy"}
    | {"source"}
)  # null = the default / none


def allow_all(_cfg: ModelConfig) -> None:
    """The permit of a caller that may store any configuration (the data directory's owner)."""


class StudioService:
    def __init__(self, runtime: Runtime, *, offline: bool = False) -> None:
        self.runtime = runtime  # for the composition root and tests; faces use the methods
        self.offline = offline
        # the gateway's hot path, bound straight to the runtime (see the module docstring)
        self.acquire = runtime.acquire
        self.died = runtime.died
        self.imported_keys: frozenset[bytes] = frozenset()  # a llama-swap import's apiKeys
        self.list_aliases = False  # a llama-swap import's includeAliasesInList
        self.watch: ConfigWatch | None = None  # LLAMASTUDIO_CONFIG_FILE, kept in sync
        self.peers = PeerService(runtime.db)  # other servers' models: the gateway routes to them
        self.workers = WorkerService(runtime.db)  # RPC workers (llamastudio worker): --rpc auto|always

    async def start(self) -> None:
        """Start the runtime (cleans up orphans, measures budgets, syncs, preloads)."""
        await self.runtime.start()
        await self.peers.start()
        await self._load_keys()
        path = self.runtime.settings.config_file
        if path is not None and not self.offline:
            self.watch = ConfigWatch(
                lambda text, source: self.import_configs("llama-swap", text, source=source),
                self.runtime.preload,
                path,
                self.runtime.bus,
            )
            await self.watch.start()

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()
        await self.peers.close()
        await self.runtime.close()

    async def refresh(self) -> None:
        """Re-read configurations, library and engines (after a change made elsewhere)."""
        if not self.offline:
            await self.runtime.sync()

    # -- status --------------------------------------------------------------------------------
    def _status(self, name: str) -> ModelStatus:
        return views.model_status(self.runtime.facts(name), time.monotonic())

    async def status(self, name: str) -> ModelStatus:
        """The status of the configured model ``name`` (no name resolution)."""
        return self._status(name)

    async def served(self, refresh: bool = True) -> list[ServedModel]:
        """Every model the gateway serves, with its state (``refresh``: re-read the library and
        configurations first: new downloads)."""
        if refresh:
            await self.refresh()
        prepared = self.runtime.prepared
        return [views.served_model(c, self._status(c.name), prepared.get(c.name)) for c in self.runtime.known]

    async def running(self) -> list[ModelStatus]:
        return views.running(self.runtime.snapshot(), time.monotonic())

    async def model_names(self) -> list[str]:
        return [c.name for c in self.runtime.known]

    async def label(self, name: str) -> str | None:
        """The configured name a requested name, alias or library id stands for (no re-sync)."""
        return self.runtime.lookup(name)

    async def traits_of(self, name: str) -> Traits | None:
        """What a model (by name, alias or library id) does, when it is prepared (no re-sync)."""
        label = self.runtime.lookup(name)
        prep = self.runtime.prepared.get(label) if label else None
        return prep.traits if prep else None

    async def kind_of(self, name: str) -> str | None:
        """The engine kind a model (by name, alias or library id) runs on, when it is prepared."""
        label = self.runtime.lookup(name)
        prep = self.runtime.prepared.get(label) if label else None
        return prep.kind if prep else None

    # -- the gateway's own endpoints -------------------------------------------------------------
    async def configurations(self) -> list[ModelConfig]:
        """Every stored configuration, read once (no preparation: cheap for listings)."""
        return await asyncio.to_thread(self.runtime.configs.stored)

    async def gateway_models(self, kinds: frozenset[str] | None = None) -> list[GatewayModel]:
        """The models the gateway lists (``kinds``: only those running on these engine kinds)."""
        listed = {c.name for c in self.runtime.known if not c.unlisted}
        served = [m for m in await self.served(refresh=False) if m.name in listed]
        if kinds is not None:
            served = [m for m in served if await self.kind_of(m.name) in kinds]
        models = [views.gateway_model(m) for m in served]
        if self.list_aliases:  # llama-swap includeAliasesInList: each alias an entry of its own
            models += [m.model_copy(update={"id": a}) for m in models for a in m.aliases]
        return models

    async def gateway_model(self, name: str) -> GatewayModel:
        for c in self.runtime.known:
            if c.name == name or name in c.aliases:
                prep = self.runtime.prepared.get(c.name)
                return views.gateway_model(views.served_model(c, self._status(c.name), prep))
        raise NotFound(f"model {name!r} not found")

    async def metrics(self) -> MetricsSnapshot:
        c = self.runtime.counters()
        drift, drifts = self.runtime.drift()
        return views.metrics(self.runtime.snapshot(), c.loads, c.evictions, c.ttl_unloads, drift, drifts)

    # -- configurations ------------------------------------------------------------------------
    def _prepare(self, cfg: ModelConfig, hw: Hardware | None = None) -> Prepared:
        """The launch spec of ``cfg`` on the runtime's hardware, with the measured memory of its
        load key when one ran. Blocking: engine, header read, database."""
        return self.runtime.measured_for(self.runtime.launcher.prepare(cfg, hw or self.runtime.hw))

    def _prepared_or_reason(self, cfg: ModelConfig) -> Prepared | str:
        try:
            return self._prepare(cfg)
        except StudioError as exc:
            return exc.message

    async def _view(self, cfg: ModelConfig) -> ConfigView:
        status, budgets = self._status(cfg.name), budgets_of(self.runtime.hw)  # on the loop
        return views.config_view(cfg, status, budgets, await asyncio.to_thread(self._prepared_or_reason, cfg))

    async def _saved(self, name: str) -> SavedConfigView:
        view = await self._view(await asyncio.to_thread(self.runtime.configs.get, name))
        return SavedConfigView(**dict(view), reload_needed=self.runtime.facts(name).reload_needed)

    async def get_config(self, name: str) -> ConfigView:
        """A configuration (stored, or a library model's defaults) by name, alias or library id."""
        return await self._view(await asyncio.to_thread(self.runtime.configs.get, name))

    async def put_config(self, cfg: ModelConfig, permit: Permit = allow_all) -> SavedConfigView:
        """Store ``cfg`` whole (fields it leaves out take their defaults)."""
        permit(cfg)
        await asyncio.to_thread(self.runtime.configs.put, cfg)
        await self.refresh()
        return await self._saved(cfg.name)

    async def patch_config(
        self, name: str, changes: dict[str, Any], permit: Permit = allow_all
    ) -> SavedConfigView:
        """Change only the fields in ``changes``; a library model is configured under ``name``.
        A field in ``NULLABLE`` set to None takes its default; any other None is refused."""
        nulls = sorted(k for k, v in changes.items() if v is None and k not in NULLABLE)
        if nulls:
            raise InvalidInput(f"{', '.join(nulls)} cannot be null (leave a field out to keep it)")
        try:
            current = await asyncio.to_thread(self.runtime.configs.get, name)
        except NotFound:
            current = ModelConfig(name=name, model=name)
        if current.name != name and not current.configured:  # a library id: configure it under that id
            current = replace(current, name=name)
        cfg = replace(current, **changes, configured=True)
        permit(cfg)
        await asyncio.to_thread(self.runtime.configs.put, cfg)
        await self.refresh()
        return await self._saved(cfg.name)

    async def delete_config(self, name: str) -> None:
        """Delete a stored configuration; its engine is stopped first (after its requests in
        flight), so no process outlives the configuration it ran (issue 18 #10)."""
        if all(c.name != name for c in await asyncio.to_thread(self.runtime.configs.stored)):
            raise NotFound(f"model {name!r} has no stored configuration")
        if not self.offline:
            await self.runtime.drain_and_stop([name])
        await asyncio.to_thread(self.runtime.configs.delete, name)
        await self.refresh()  # a request that raced in meanwhile: the scheduler unloads it again

    async def preview(self, cfg: ModelConfig) -> ConfigView:
        """What ``cfg`` would run and cost, without saving it; its values and flags are checked
        as when saving (an unknown flag is a 400)."""
        validate(cfg)
        await asyncio.to_thread(self.runtime.configs.check_flags, cfg)
        return await self._view(cfg)

    async def command(self, name: str) -> CommandView:
        """The exact argv that starting ``name`` runs (``${PORT}`` is chosen at start)."""
        p = await asyncio.to_thread(lambda: self._prepare(self.runtime.configs.get(name)))
        return CommandView(argv=p.argv, dropped=p.dropped, engine=p.engine.id if p.engine else None)

    async def hardware(self, profile: str | None = None) -> Hardware:
        """A named hardware profile (maybe a JSON file: read in a thread), else what the runtime
        plans for (``LLAMASTUDIO_HARDWARE`` or this machine)."""
        return await asyncio.to_thread(resolve_named, profile) if profile else self.runtime.hw

    async def smart_auto(
        self,
        name: str,
        goal: Goal = "balanced",
        ctx: int | None = None,
        parallel: int | None = None,
        args: list[str] | None = None,
        hardware: str | None = None,
    ) -> AutoConfig:
        hw = await self.hardware(hardware)
        launcher = self.runtime.launcher  # the header is read and the planner searches: in a thread
        p = await asyncio.to_thread(launcher.smart_auto, name, hw, goal, ctx, parallel, args or [])
        return AutoConfig(args=p.flags.to_args(), reasons=p.reasons, warnings=p.warnings, plan=p.to_json())

    async def estimate(self, name: str, args: list[str], hardware: str | None = None) -> MemoryEstimate:
        hw = await self.hardware(hardware)
        found = await asyncio.to_thread(self.runtime.launcher.estimate_for, name, args, hw)
        return MemoryEstimate.model_validate(found)

    async def draft_candidates(self, name: str) -> list[DraftCandidate]:
        """Library models that can be ``name``'s draft model (speculative decoding)."""
        found = await asyncio.to_thread(self.runtime.launcher.draft_candidates, name)
        return [DraftCandidate(id=m.id, path=m.path, size=m.size, quant=m.quant) for m in found]

    async def import_configs(
        self,
        fmt: str,
        text: str,
        permit: Permit = allow_all,
        source: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> swapimport.Imported:
        """Parse, check every configuration (``permit`` refuses one the caller may not store),
        then store them all or none, in one transaction (``services/swapimport.py``); the
        models a watched file (``source``) no longer defines are removed. Running models whose
        configuration went are stopped after their requests in flight. ``env``: what
        ``${env.X}`` reads (None: the studio's environment; ``NoEnvironment`` for a caller who may
        not read it)."""
        swapimport.check_format(fmt)
        done = await asyncio.to_thread(swapimport.store, self.runtime, fmt, text, permit, source, env)
        if done.removed and not self.offline:
            await self.runtime.drain_and_stop(done.removed)
        await self._load_keys()
        if done.peers is not None:
            await self.peers.set_imported_peers(done.peers)
        await self.refresh()
        return done

    async def export_configs(self, fmt: str, secrets: bool = True) -> str:
        """Stored configurations as llama-swap ``config.yaml`` (with what an import kept:
        ``apiKeys``, ``peers``, top-level keys) or a ``--models-preset`` INI."""
        swapimport.check_format(fmt)
        return await asyncio.to_thread(swapimport.export, self.runtime, fmt, secrets)

    async def _load_keys(self) -> None:
        """What a llama-swap import stored that the gateway applies: its keys, alias listing."""
        db = self.runtime.db
        keys, kept = await asyncio.gather(
            asyncio.to_thread(swapstate.api_keys, db), asyncio.to_thread(swapstate.settings, db)
        )
        self.imported_keys = frozenset(k.encode() for k in keys)
        self.list_aliases = kept.get("includeAliasesInList") is True

    def body_rules(self, name: str) -> ModelConfig | None:
        """The configuration of ``name`` (name, alias or library id) when the gateway must rewrite
        a request's body for it (``useModelName``, ``stripParams``, ``setParams``); else None.
        On the loop, no I/O: the gateway's hot path."""
        label = self.runtime.lookup(name)
        prep = self.runtime.prepared.get(label) if label else None
        cfg = prep.config if prep else None
        if cfg is None or not (cfg.use_model_name or cfg.strip_params or cfg.set_params):
            return None
        return cfg

    # -- running -------------------------------------------------------------------------------
    async def start_model(self, name: str) -> ModelStatus:
        """Start a model (by name, alias or library id) and wait until it is ready."""
        proc = await self.runtime.load(name)
        return self._status(proc.name)

    async def stop_model(self, name: str) -> ModelStatus:
        """Stop a model once its requests in flight have finished."""
        model = await self.runtime.resolve(name)
        await self.runtime.unload(model)
        return self._status(model)

    async def reload(self, name: str) -> ModelStatus:
        """Restart a running model with its current configuration after its requests in flight
        (requests arriving meanwhile wait for the new engine); a stopped model stays stopped."""
        model = await self.runtime.resolve(name)
        if self._status(model).state in ("ready", "starting"):
            await self.runtime.unload(model)
            await self.runtime.load(model)
        return self._status(model)

    async def unload_all(self) -> list[str]:
        return await self.runtime.unload_all()

    async def logs(self, name: str, tail: int = 200) -> LogTail:
        """The last ``tail`` lines (1 … ``MAX_TAIL``) of the model's engine log, rotated files
        included, read backwards from the end in a thread."""
        if not 1 <= tail <= MAX_TAIL:
            raise InvalidInput(f"tail must be between 1 and {MAX_TAIL}")
        model = await self.runtime.resolve(name, usable=False)  # a failed model's log says why
        lines = await asyncio.to_thread(tail_lines, self.runtime.log_path(model), tail)
        return LogTail(model=model, lines=lines)

    # -- settings ------------------------------------------------------------------------------
    async def default_ttl(self) -> float:
        """The TTL set in the UI (stored), else ``LLAMASTUDIO_DEFAULT_TTL``."""
        rt = self.runtime
        return await asyncio.to_thread(stored.default_ttl, rt.db, rt.settings.default_ttl)

    async def set_default_ttl(self, seconds: float) -> None:
        await asyncio.to_thread(stored.set_default_ttl, self.runtime.db, seconds)
        await self.refresh()

    async def database_status(self) -> DatabaseStatus:
        db = self.runtime.db
        ok = await asyncio.to_thread(ping, db.engine)  # waits while a writer holds the lock
        return DatabaseStatus(ok=ok, revision=db.revision)

    # -- engines and the library: what runs on them --------------------------------------------
    async def engines_in_use(self) -> set[str]:
        """Ids of the engines a model runs on (starting, ready, stopping or failed)."""
        now = time.monotonic()
        return {
            f.engine
            for f in self.runtime.snapshot()
            if f.engine is not None and views.model_status(f, now).state != "stopped"
        }

    async def engine_in_use(self, engine_id: str) -> bool:
        return engine_id in await self.engines_in_use()

    async def stop_users_of(self, library_id: str) -> list[str]:
        """Stop (after their requests in flight) every model that runs a file of the library
        model ``library_id`` (or under that added path), before the files go; returns them."""
        paths = {f.name: f.model_path for f in self.runtime.snapshot() if f.model_path is not None}
        users = await asyncio.to_thread(self._users_of, library_id, paths)
        if not self.offline:
            await self.runtime.drain_and_stop(users)
        return users

    def _users_of(self, library_id: str, paths: dict[str, Path]) -> list[str]:
        """Blocking: the library's record and the paths resolved on disk."""
        roots: set[Path] = set()
        with contextlib.suppress(NotFound):
            local = self.runtime.library.get(library_id)
            roots.update(Path(f).resolve() for f in [local.path, *local.files])
        if "/" in library_id:
            roots.add(Path(library_id).expanduser().resolve())
        users = []
        for name, path in paths.items():
            resolved = path.resolve()
            if resolved in roots or any(r in resolved.parents for r in roots):
                users.append(name)
        return users

    async def library_models(self) -> list[LocalModel]:
        return await asyncio.to_thread(self.runtime.library.models)

    async def add_to_library(self, path: Path) -> list[LocalModel]:
        """Add a GGUF file, the GGUF files under a directory, or a transformers checkpoint
        directory (config.json + *.safetensors, every header read); searched in a thread."""
        found = await asyncio.to_thread(self.runtime.library.add, path)
        await self.refresh()
        return found

    async def remove_from_library(self, library_id: str, delete_files: bool = False) -> list[str]:
        """Stop the models that run its files (no engine outlives its file), then remove it."""
        await self.stop_users_of(library_id)
        removed = await asyncio.to_thread(self.runtime.library.remove, library_id, delete_files)
        await self.refresh()
        return removed
