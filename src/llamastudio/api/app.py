"""The FastAPI application: one factory wiring settings, database, routes and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from llamastudio import __version__
from llamastudio.api.deps import AppState, require_api_key
from llamastudio.api.errors import install_error_handlers
from llamastudio.api.routes import (
    activity,
    downloads,
    engines,
    foreign,
    hardware,
    hub,
    live,
    peers,
    safetensors,
    seed,
    seed_versions,
    serving,
    status,
    ui,
    workers,
)
from llamastudio.api.routes import jobs as jobs_routes
from llamastudio.config import Settings
from llamastudio.engines.jobs import ENGINE_KINDS, EngineJobs
from llamastudio.engines.load_progress import LOAD_KIND
from llamastudio.events import EventBus
from llamastudio.gateway.app import Gateway, error_json
from llamastudio.gateway.metrics import Metrics
from llamastudio.guard import Guard
from llamastudio.hardware.monitor import SystemMonitor
from llamastudio.hub.client import HubClient
from llamastudio.hub.jobs import Downloads, download_kind
from llamastudio.hub.token import effective_token
from llamastudio.jobs import JobManager
from llamastudio.runtime.manager import Runtime
from llamastudio.services import StudioService
from llamastudio.store import Database


def create_app(settings: Settings) -> FastAPI:
    """Build the app; the data directory is created and the database migrated at startup."""
    settings.ensure_dirs()
    db = Database(settings.db_path)

    bus = EventBus()
    # one job system: downloads, engine builds/installs, model loads (the runtime tracks those)
    jobs = JobManager(db, bus, settings.logs_dir / "jobs")
    hub_client = lambda: HubClient(token=effective_token(settings.data_dir) or "")  # noqa: E731
    for kind in (download_kind(hub_client), *ENGINE_KINDS, LOAD_KIND):
        jobs.register(kind)
    downloads_ = Downloads(jobs, hub_client)
    runtime = Runtime(settings, db, bus, jobs=jobs)
    service = StudioService(runtime)
    engine_jobs = EngineJobs(jobs)
    monitor = SystemMonitor(bus, settings.data_dir)
    metrics = Metrics(bus)  # its recent requests are published: gateway/activity.py
    # the UI's playground talks to the gateway through this same origin; the management key or
    # the gateway key opens it (the guard checks first, before the body is read)
    ui_gateway = Gateway(service, settings, metrics, keys=[settings.api_key, settings.gateway_api_key])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await jobs.start()  # resumes downloads a previous run left unfinished, fails builds
        await service.start()  # cleans up engine processes a killed studio left behind
        await monitor.start()
        try:
            yield
        finally:
            await monitor.close()
            await ui_gateway.close()
            await jobs.close()
            await service.close()
            db.close()

    # /docs and /redoc are ui.py's: their scripts are served locally, not from a CDN
    app = FastAPI(
        title="llama.cpp Studio", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.studio = AppState(
        settings=settings,
        service=service,
        engines=runtime.engines,
        jobs=jobs,
        downloads=downloads_,
        bus=bus,
        engine_jobs=engine_jobs,
        monitor=monitor,
        metrics=metrics,
    )
    install_error_handlers(app)
    # Host, cross-site, key, CSRF-header and body-size checks before any route or the mount
    app.add_middleware(Guard, settings=settings, gateway_render=error_json)
    routers = (status, hardware, hub, downloads, jobs_routes, safetensors, serving, engines, live, activity)
    seed_api = (seed, seed_versions)  # after the studio's: its DELETE /api/models/{id} would match theirs
    for module in (*routers, *seed_api):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    for extra in (peers, foreign, workers):  # remote servers' models; Ollama's and LM Studio's in place
        app.include_router(extra.router, dependencies=[Depends(require_api_key)])
    app.include_router(live.ws_router)  # its key and Origin are checked by the guard
    app.mount("/gateway", ui_gateway)
    app.include_router(ui.router)  # last: the UI answers every other GET
    return app
