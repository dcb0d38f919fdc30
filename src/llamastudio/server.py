"""``llamastudio serve``: the UI + management API and the gateway, two ports, one process.

Both share the runtime. The API server starts first (its lifespan starts the runtime and cleans
up orphans); on SIGINT/SIGTERM the gateway stops first (uvicorn waits for its open responses),
then the API, whose lifespan stops every engine process.

Both listeners time out requests whose headers or body stall (``http_protocol.py``). An address
other than loopback is refused while either listener has no API key, unless ``--insecure``
(``check_exposure``).

The loop is uvloop's when installed; in asyncio debug mode (``LLAMASTUDIO_ASYNCIO_DEBUG``,
``PYTHONASYNCIODEBUG``) it is the stdlib loop, with slow-callback detection (``loopdebug.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Generator

import uvicorn

from llamastudio import loopdebug, runinfo
from llamastudio.api.app import create_app
from llamastudio.api.deps import AppState
from llamastudio.config import Settings
from llamastudio.errors import Conflict, InvalidInput
from llamastudio.gateway.app import Gateway, error_json
from llamastudio.guard import guard_gateway
from llamastudio.http_protocol import BODY_TIMEOUT, HEADER_TIMEOUT, with_timeouts

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:  # signals are handled by serve()
        yield


def _config(
    app: object,
    host: str,
    port: int,
    level: str,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> uvicorn.Config:
    """One listener: httptools with header and body-idle timeouts (``http_protocol.py``)."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=level,
        loop="none",
        http=with_timeouts(header_timeout, body_timeout),
        timeout_graceful_shutdown=30,
        access_log=level == "debug",
    )


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only exposes the ports to this machine (``localhost``,
    ``127.0.0.0/8``, ``::1``, or a name resolving only to those)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        addrs = [ipaddress.ip_address(name)]
    except ValueError:
        try:
            addrs = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(name, None)]
        except (OSError, ValueError):
            return False
    mapped = [a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addrs]
    return bool(mapped) and all(a.is_loopback for a in mapped)


def check_exposure(settings: Settings) -> None:
    """Refuse (exit 2) to bind a non-loopback address while a listener has no key, unless
    ``--insecure``: both listeners bind the same address, and an unkeyed one lets anyone who can
    reach it drive the studio. One key is not enough: the other listener is still open."""
    if settings.insecure or is_loopback(settings.host):
        return
    open_ = []
    if not settings.api_key:
        open_.append(
            f"the management API (port {settings.port}: configure and start models, download, "
            "build engines, run commands)"
        )
    if not settings.gateway_api_key:
        open_.append(f"the gateway (port {settings.gateway_port}: load and use every model)")
    if open_:
        raise InvalidInput(
            f"refusing to listen on {settings.host} without a key on each port: anyone on the network could "
            f"use {' and '.join(open_)}. Set LLAMASTUDIO_API_KEY and LLAMASTUDIO_GATEWAY_API_KEY, "
            "bind 127.0.0.1, or pass --insecure (LLAMASTUDIO_INSECURE=1) if you mean it."
        )


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    state: AppState = app.state.studio
    gateway = Gateway(state.service, settings, state.metrics)
    api = _Server(_config(app, settings.host, settings.port, settings.log_level))
    guarded = guard_gateway(gateway, settings, error_json)  # Host check and body limit
    gw = _Server(_config(guarded, settings.host, settings.gateway_port, settings.log_level))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # What start-up made (modules, the app) lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it while holding the loop (~0.1 s on 2 cores)
    gc.collect()
    gc.freeze()
    api_task = asyncio.create_task(api.serve())
    while not api.started and not api_task.done():
        await asyncio.sleep(0.02)
    gw_task = asyncio.create_task(gw.serve())
    while not gw.started and not gw_task.done():
        await asyncio.sleep(0.02)
    lm, lm_task = await _lmdeploy_listener(state, settings)
    if api.started and gw.started:  # the CLI finds this studio through its data directory
        runinfo.write(
            settings.data_dir,
            settings.host,
            _bound_port(api, settings.port),
            _bound_port(gw, settings.gateway_port),
            state.owner_key,
        )
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({api_task, gw_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        runinfo.remove(settings.data_dir)
    gw.should_exit = True
    if lm is not None:
        lm.should_exit = True
    await asyncio.gather(gw_task, *([lm_task] if lm_task else []), return_exceptions=True)
    api.should_exit = True
    await asyncio.gather(api_task, return_exceptions=True)
    stopper.cancel()
    for task in (api_task, gw_task):
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _lmdeploy_listener(
    state: AppState, settings: Settings
) -> tuple[_Server | None, asyncio.Task[None] | None]:
    """The seed's second endpoint (``LMDEPLOY_PORT``, default 2001): the gateway, serving only
    the models that run on LMDeploy. A port already taken there is logged, not fatal: port 2000
    serves the same models."""
    if settings.lmdeploy_port < 0:
        return None, None
    app = Gateway(state.service, settings, state.metrics, kinds=frozenset({"lmdeploy"}))
    server = _Server(
        _config(
            guard_gateway(app, settings, error_json),
            settings.host,
            settings.lmdeploy_port,
            settings.log_level,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if not server.started:
        log.warning("the LMDeploy listener could not bind %s:%s: off", settings.host, settings.lmdeploy_port)
        return None, None
    return server, task


def _bound_port(server: uvicorn.Server, configured: int) -> int:
    """The port a listener got (``configured`` unless it was 0)."""
    for srv in server.servers:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return configured


def check_single(settings: Settings) -> None:
    """Refuse a second studio on one data directory (two writers of one database, two owners of
    the same engines' orphan records)."""
    other = runinfo.read(settings.data_dir)
    if other is not None and other.pid != os.getpid():
        raise Conflict(
            f"another studio (pid {other.pid}) already serves {settings.data_dir} at {other.url}; "
            "stop it first, or give this one another --data-dir"
        )


def run(settings: Settings) -> None:
    check_exposure(settings)
    check_single(settings)
    if loopdebug.wanted(settings.asyncio_debug):  # the stdlib loop: uvloop times few callbacks
        loopdebug.run(serve(settings), settings.slow_callback_s)
        return
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
