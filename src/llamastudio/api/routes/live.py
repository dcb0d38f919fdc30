"""Live updates: ``/ws`` (every event: jobs — ``job.changed``, ``job.progress``, ``job.log``,
``job.removed`` for downloads, builds, installs and loads —, model states and logs, system stats,
the gateway's requests — ``activity``, see ``gateway/activity.py`` and ``GET /api/activity``)
and ``GET /api/system`` (current stats and the recent history)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from llamastudio.api.deps import AppState, StateDep

router = APIRouter(tags=["live"])
ws_router = APIRouter(tags=["live"])
HELLO_JOBS = 200  # the newest jobs in the snapshot; the rest through GET /api/jobs


@router.get("/api/system")
async def system(state: StateDep) -> dict[str, Any]:
    mon = state.monitor
    current = await asyncio.to_thread(mon.sample)
    return {"current": current, "history": list(mon.history)}


@ws_router.websocket("/ws")
async def ws(socket: WebSocket) -> None:
    """A snapshot first (``hello``), then every event as JSON. With an API key configured, pass
    it as ``Authorization: Bearer`` or, from the UI's own origin, ``?key=`` (browsers cannot set
    headers on WebSockets): the guard checks it and the Origin before the handshake."""
    state: AppState = socket.app.state.studio
    await socket.accept()
    queue = state.bus.subscribe()
    try:
        await socket.send_json(
            {
                "type": "hello",
                "models": [m.model_dump(mode="json") for m in await state.service.served(refresh=False)],
                "jobs": [j.model_dump(mode="json") for j in state.jobs.list(limit=HELLO_JOBS)],
                "stats": list(state.monitor.history)[-60:],
            }
        )
        receiver = asyncio.create_task(_drain(socket))
        while not receiver.done():
            get = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({get, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            event = get.result()
            if event.get("type") == "model":
                status = await state.service.status(event["model"])
                event = {**event, "status": status.model_dump(mode="json")}
            await socket.send_json(event)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        state.bus.unsubscribe(queue)
        with contextlib.suppress(Exception):
            await socket.close()


async def _drain(socket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await socket.receive_text()
