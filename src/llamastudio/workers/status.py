"""The worker's status endpoint, served beside its rpc-server (default: the RPC port + 1).

``GET /health``: ``{"ok": true}`` without a key (for probes). Everything else needs
``Authorization: Bearer <key>``: ``GET /status`` (devices, memory offered, llama.cpp build, the RPC
port and whether rpc-server is up) and ``GET /bandwidth?mib=N`` (N MiB of zeros, N ≤ 256: the
studio times it once at registration to estimate the link).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llamastudio import __version__
from llamastudio.workers.worker import Supervisor, WorkerState, probe_devices

MAX_BANDWIDTH_MIB = 256
_CHUNK = bytes(1 << 20)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "source": "worker"}}, status)


async def status_body(state: WorkerState) -> dict[str, Any]:
    devices = await asyncio.to_thread(probe_devices, state.binary.path, state.devices or None)
    for dev in devices:  # the worker offers at most --mem MiB per device
        if state.mem_mib is not None:
            dev["offered_mib"] = min(int(str(dev["free_mib"])), state.mem_mib)
        else:
            dev["offered_mib"] = dev["free_mib"]
    return {
        "rpc": {"host": state.host, "port": state.port, "alive": state.alive, "pid": state.pid},
        "protocol": state.protocol,
        "llama_cpp": {
            "version": state.binary.version,
            "commit": state.binary.commit,
            "engine": state.binary.engine_id,
        },
        "devices": devices,
        "mem_mib": state.mem_mib,
        "restarts": state.restarts,
        "last_exit": state.last_exit,
        "uptime_s": round(time.time() - state.started_at, 1),
        "studio_version": __version__,
    }


def build_app(state: WorkerState, key: str) -> Starlette:
    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def status(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "this worker needs its key: Authorization: Bearer <key>")
        return JSONResponse(await status_body(state))

    async def bandwidth(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized", "this worker needs its key: Authorization: Bearer <key>")
        raw = request.query_params.get("mib", "64")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_BANDWIDTH_MIB:
            return _error(400, "invalid_input", f"mib must be 1..{MAX_BANDWIDTH_MIB}")
        n = int(raw)

        async def body() -> Any:
            for _ in range(n):
                yield _CHUNK

        return StreamingResponse(
            body(), media_type="application/octet-stream", headers={"Content-Length": str(n << 20)}
        )

    async def not_found(request: Request, _: Exception) -> Response:
        return _error(404, "not_found", f"no route {request.url.path}")

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/status", status),
            Route("/bandwidth", bandwidth),
        ],
        exception_handlers={404: not_found},
    )


async def serve(
    state: WorkerState, status_host: str, status_port: int, key: str, supervisor: Supervisor
) -> None:
    """Run rpc-server under ``supervisor`` and the status endpoint until SIGINT/SIGTERM."""
    config = uvicorn.Config(
        build_app(state, key), host=status_host, port=status_port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    running = asyncio.ensure_future(supervisor.run())
    try:
        await server.serve()
    finally:
        await supervisor.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
