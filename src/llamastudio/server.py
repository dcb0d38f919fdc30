"""``llamastudio serve``: the UI + management API and the gateway, two ports, one process.

Both share the runtime. The API server starts first (its lifespan starts the runtime and cleans
up orphans); on SIGINT/SIGTERM the gateway stops first (uvicorn waits for its open responses),
then the API, whose lifespan stops every engine process.

Both listeners time out requests whose headers or body stall (``http_protocol.py``). An address
other than loopback is refused while either listener has no API key, unless ``--insecure``
(``check_exposure``).

The loop is uvloop's when installed; in asyncio debug mode (``LLAMASTUDIO_ASYNCIO_DEBUG``,
``PYTHONASYNCIODEBUG``) it is the stdlib loop, with slow-callback detection (``loopdebug.py``).

One-model mode (``MODEL`` / ``MODEL_PATH``, ``services/onemodel.py``): the model is resolved and
its fit checked before either port opens (a model that cannot fit ends the start, exit 3); once
they answer it is downloaded, configured and loaded, and ``/health`` says 503 until it is. The
UI + API port then also answers the OpenAI API (``/v1/…``) and ``/health``, as the seeds'
single-model images do on their one ``PORT``; the gateway port serves it too. A failure of that
start stops the studio with the error (exit non-zero).

The studio's own log lines go to stderr in uvicorn's format (``INFO:     …``), one plain line each.
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
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.logging import DefaultFormatter

from llamastudio import loopdebug, runinfo
from llamastudio.api.app import create_app
from llamastudio.api.deps import AppState
from llamastudio.config import Settings
from llamastudio.errors import Conflict, InvalidInput, NotFound
from llamastudio.gateway.app import Gateway, error_json
from llamastudio.gateway.asgi import Receive, Scope, Send, local_path, send_json
from llamastudio.guard import guard_gateway
from llamastudio.http_protocol import BODY_TIMEOUT, HEADER_TIMEOUT, with_timeouts
from llamastudio.services.onemodel import OneModel

log = logging.getLogger(__name__)
ASGI = Any  # an ASGI 3 application
NO_ENGINE = (
    "no llama.cpp engine is registered yet: models cannot start until one is.",
    "  install a release build:    llamastudio engines install [--backend cuda|vulkan|hip]  "
    "(or the Engines page of the UI)",
    "  build one from source:      llamastudio engines build --backend cpu|cuda|vulkan|metal",
    "  use a llama-server you have: LLAMA_SERVER_PATH=/path/to/llama-server "
    "(or llamastudio engines add PATH)",
)


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
        proxy_headers=False,  # nothing reads the client's address; a local caller could forge it
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
            f"refusing to listen on {settings.host} (--host, LLAMASTUDIO_HOST or HOST) without a key on "
            "each port: anyone on the network could "
            f"use {' and '.join(open_)}. Set LLAMASTUDIO_API_KEY and LLAMASTUDIO_GATEWAY_API_KEY, "
            "bind 127.0.0.1, or pass --insecure (LLAMASTUDIO_INSECURE=1) if you mean it."
        )


async def serve(settings: Settings) -> None:
    dotenv = Path(".env")
    if dotenv.is_file():  # said at start: a .env of an unrelated project would change the studio
        log.info("settings: also read from %s (the real environment wins over it)", dotenv.resolve())
    if settings.one_model:
        log.info("one-model mode: MODEL=%s MODEL_PATH=%s", settings.model or "", settings.model_path or "")
    app = create_app(settings)
    state: AppState = app.state.studio
    one = OneModel(settings, state.service, state.downloads, state.bus) if settings.one_model else None
    if one is not None:  # which file, and does it fit: a model that cannot fit ends the start here
        await one.resolve()
    fallback = one.choice.name if one is not None and one.choice is not None else None
    gateway = Gateway(state.service, settings, state.metrics, fallback=fallback)
    # Host check and body limit; in one-model mode /health waits for the model
    guarded = guard_gateway(_health_gate(gateway, one), settings, error_json)
    front: ASGI = app if one is None else _with_openai(app, guarded)
    api = _Server(_config(front, settings.host, settings.port, settings.log_level))
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
    one_task = None
    if api.started:
        has_engine = await asyncio.to_thread(_has_llama_cpp, state)
        if not has_engine:
            for line in NO_ENGINE:
                log.warning("%s", line)
        if one is not None:
            one_task = asyncio.create_task(_run_one(one, has_engine))
    failure: BaseException | None = None
    try:
        waiting: set[asyncio.Task[Any]] = {api_task, gw_task, stopper}
        if one_task is not None:
            waiting.add(one_task)
        while True:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if one_task in done and not one_task.cancelled() and one_task.exception() is not None:
                failure = one_task.exception()  # the studio stops with it: exit non-zero
                break
            if one_task is None or done != {one_task}:
                break
            waiting.discard(one_task)  # the model is ready: serve on
    finally:
        runinfo.remove(settings.data_dir)
    if one_task is not None and not one_task.done():
        one_task.cancel()
        await asyncio.gather(one_task, return_exceptions=True)
    gw.should_exit = True
    if lm is not None:
        lm.should_exit = True
    await asyncio.gather(gw_task, *([lm_task] if lm_task else []), return_exceptions=True)
    api.should_exit = True
    await asyncio.gather(api_task, return_exceptions=True)
    stopper.cancel()
    if failure is not None:
        raise failure
    for task in (api_task, gw_task):
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _has_llama_cpp(state: AppState) -> bool:
    """Whether a llama.cpp engine is registered (blocking: the engine table)."""
    return any(e.family == "llama.cpp" for e in state.engines.all())


async def _run_one(one: OneModel, has_engine: bool) -> None:
    if not has_engine:
        raise NotFound(
            "one-model mode needs a llama.cpp engine and none is registered: install a release "
            "(`llamastudio engines install`), build one (`llamastudio engines build`), or set "
            "LLAMA_SERVER_PATH to a llama-server binary"
        )
    await one.run()


def _health_gate(app: ASGI, one: OneModel | None) -> ASGI:
    """In one-model mode ``/health`` answers 503 (with what it is doing) until the model is
    loaded, then 200: what a container's health check and a load balancer wait for."""
    if one is None:
        return app

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and local_path(scope) == "/health":
            await send_json(send, 200 if one.ready else 503, one.health())
            return
        await app(scope, receive, send)

    return gated


def _with_openai(api: ASGI, gateway: ASGI) -> ASGI:
    """One-model mode: the UI + API port also answers ``/v1/…`` and ``/health`` through the
    gateway (its own Host check, key and body limit), as the seeds' single-model images answer
    everything on their one ``PORT``."""

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/health" or path == "/v1" or path.startswith("/v1/"):
            await gateway(scope, receive, send)
            return
        await api(scope, receive, send)

    return front


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


def setup_logging(level: str) -> None:
    """The studio's log lines on stderr in uvicorn's format (``INFO:     …``), one plain line each,
    at ``level`` (once per process)."""
    logger = logging.getLogger("llamastudio")
    if not any(getattr(h, "studio", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False))
        handler.studio = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def apply_environment(settings: Settings) -> None:
    """Put into the process environment the settings that other readers take from it: the Hub
    client (``HF_TOKEN``, ``HF_ENDPOINT``), the NVIDIA probe and every engine process
    (``CUDA_VISIBLE_DEVICES``; ``all`` means every GPU, so it is removed; ``none`` means none).
    A value from ``.env`` or a ``LLAMASTUDIO_`` name thus reaches them too. Before the app is
    built: the hardware is probed then."""
    if settings.hf_token and os.environ.get("HF_TOKEN") != settings.hf_token:
        os.environ["HF_TOKEN"] = settings.hf_token
    endpoint = settings.hf_endpoint.rstrip("/")
    if endpoint != os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/"):
        os.environ["HF_ENDPOINT"] = endpoint
    devices = settings.cuda_visible_devices
    if devices is not None:
        word = devices.strip().lower()
        if word == "all":
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = "" if word == "none" else devices.strip()


def run(settings: Settings) -> None:
    setup_logging(settings.log_level)
    check_exposure(settings)
    check_single(settings)
    apply_environment(settings)
    if loopdebug.wanted(settings.asyncio_debug):  # the stdlib loop: uvloop times few callbacks
        loopdebug.run(serve(settings), settings.slow_callback_s)
        return
    try:
        import uvloop

        uvloop.run(serve(settings))
    except ImportError:
        asyncio.run(serve(settings))
