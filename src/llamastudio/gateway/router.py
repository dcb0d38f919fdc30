"""llama.cpp router mode's model API on the gateway, mapped onto the studio's scheduler, so
llama.cpp's web UI model picker and scripts written for ``llama-server --models-dir`` /
``--models-preset`` work against the gateway unchanged.

As llama-server b11434's router answers (checked against the real binary by
``tests/test_router_api.py``):

- ``GET /models`` and ``GET /v1/models`` give the same list: OpenAI's shape, each model with
  ``status.value`` one of ``loaded`` / ``loading`` / ``unloaded`` (``failed: true`` after a failed
  start), ``aliases``, ``tags`` and ``architecture`` (input/output modalities). The studio keeps
  its own status fields (``state``, ``in_flight`` …) beside ``value``.
- ``POST /models/load {"model"}`` answers ``{"success": true}`` at once and the model loads in
  the background (its status says ``loading``, then ``loaded``); a model already running is a 400
  ``model is already running``.
- ``POST /models/unload {"model"}`` stops it (after its requests in flight) and answers
  ``{"success": true}``; a model not running is a 400 ``model is not running``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.services import StudioService

log = logging.getLogger(__name__)
_VALUE = {"ready": "loaded", "starting": "loading", "stopping": "loaded"}
_RUNNING = frozenset({"ready", "starting"})


def router_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/models`` entry with what llama-server's router adds (``status.value``,
    ``aliases``, ``tags``, ``architecture``); a peer's entry keeps what its server said."""
    status = entry.get("status")
    status = dict(status) if isinstance(status, dict) else {}
    state = str(status.get("state") or "")
    if "value" not in status:
        status["value"] = _VALUE.get(state, "unloaded" if state else "loaded")
    if state == "failed":
        status["failed"] = True
    caps = entry.get("capabilities") or []
    inputs = ["text", "image"] if "vision" in caps else ["text"]
    return {
        "aliases": [],
        "tags": [],
        "architecture": {"input_modalities": inputs, "output_modalities": ["text"]},
        **entry,
        "status": status,
    }


def _model_of(body: bytes) -> str:
    try:
        data = json.loads(body or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from exc
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidInput('model name is missing from the request (send {"model": "<id>"})')
    return model


class RouterApi:
    """``POST /models/load`` and ``/models/unload`` (the list is the gateway's own)."""

    def __init__(self, service: StudioService) -> None:
        self.service = service
        self._loads: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in list(self._loads):
            task.cancel()

    async def _resolve(self, body: bytes) -> str:
        model = _model_of(body)
        label = await self.service.label(model)
        if label is not None:
            return label
        peer = self.service.peers.choose(model)  # raises 503 when its peer does not answer
        if peer is not None:
            raise InvalidInput(f"model {model!r} is served by peer {peer.spec.name}: load it there")
        raise NotFound(f"model {model!r} not found")

    async def load(self, body: bytes) -> dict[str, Any]:
        name = await self._resolve(body)
        if (await self.service.status(name)).state in _RUNNING:
            raise InvalidInput("model is already running")
        task = asyncio.create_task(self._load(name), name=f"router load {name}")
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        return {"success": True}

    async def _load(self, name: str) -> None:
        try:
            await self.service.start_model(name)
        except StudioError as exc:  # its status says failed, with the reason
            log.warning("POST /models/load %s: %s", name, exc.message)

    async def unload(self, body: bytes) -> dict[str, Any]:
        name = await self._resolve(body)
        if (await self.service.status(name)).state not in _RUNNING:
            raise InvalidInput("model is not running")
        await self.service.stop_model(name)
        return {"success": True}
