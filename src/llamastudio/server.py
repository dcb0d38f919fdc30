"""``llamastudio serve``: the UI + management API and the gateway, two ports, one process.

Both share the runtime. The API server starts first (its lifespan starts the runtime and cleans
up orphans); on SIGINT/SIGTERM the gateway stops first (uvicorn waits for its open responses),
then the API, whose lifespan stops every engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator

import uvicorn

from llamastudio.api.app import create_app
from llamastudio.api.deps import AppState
from llamastudio.config import Settings
from llamastudio.gateway.app import Gateway


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # signals are handled by serve()
        yield


def _config(app: object, host: str, port: int, level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=level,
        loop="none",
        http="httptools",
        timeout_graceful_shutdown=30,
        access_log=level == "debug",
    )


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    state: AppState = app.state.studio
    gateway = Gateway(state.runtime, settings, state.metrics)
    api = _Server(_config(app, settings.host, settings.port, settings.log_level))
    gw = _Server(_config(gateway, settings.host, settings.gateway_port, settings.log_level))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    api_task = asyncio.create_task(api.serve())
    while not api.started and not api_task.done():
        await asyncio.sleep(0.02)
    gw_task = asyncio.create_task(gw.serve())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({api_task, gw_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    gw.should_exit = True
    await asyncio.gather(gw_task, return_exceptions=True)
    api.should_exit = True
    await asyncio.gather(api_task, return_exceptions=True)
    stopper.cancel()
    for task in (api_task, gw_task):
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def run(settings: Settings) -> None:
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
