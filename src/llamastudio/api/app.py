"""The FastAPI application: one factory wiring settings, database, routes and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from llamastudio import __version__
from llamastudio.api.deps import AppState, require_api_key
from llamastudio.api.errors import install_error_handlers
from llamastudio.api.routes import downloads, hardware, hub, serving, status
from llamastudio.config import Settings
from llamastudio.events import EventBus
from llamastudio.hub.client import HubClient
from llamastudio.hub.jobs import DownloadManager
from llamastudio.hub.token import effective_token
from llamastudio.runtime.manager import Runtime
from llamastudio.store import Database


def create_app(settings: Settings) -> FastAPI:
    """Build the app; the data directory is created and the database migrated at startup."""
    settings.ensure_dirs()
    db = Database(settings.db_path)

    bus = EventBus()
    manager = DownloadManager(db, lambda: HubClient(token=effective_token(settings.data_dir) or ""), bus=bus)
    runtime = Runtime(settings, db, bus)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await manager.start()  # resumes downloads a previous run left unfinished
        await runtime.start()  # cleans up engine processes a killed studio left behind
        try:
            yield
        finally:
            await runtime.close()
            await manager.stop()
            db.close()

    app = FastAPI(title="llama.cpp Studio", version=__version__, lifespan=lifespan)
    app.state.studio = AppState(settings=settings, db=db, downloads=manager, runtime=runtime, bus=bus)
    install_error_handlers(app)
    for router in (status.router, hardware.router, hub.router, downloads.router, serving.router):
        app.include_router(router, dependencies=[Depends(require_api_key)])
    return app
