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
- ``GET /props`` naming no model answers the router's own props (``"role": "router"``: how
  llama.cpp's web UI knows to show its model picker) — unless the gateway serves one model, or
  runs in one-model mode, where it is that model's ``/props`` as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from llamastudio import __version__
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


def router_props() -> dict[str, Any]:
    """llama-server router's ``GET /props`` (b11434's keys; no limit on instances: 0, as the
    scheduler places by memory)."""
    return {
        "role": "router",
        "max_instances": 0,
        "models_autoload": True,
        "model_alias": "llamastudio",
        "model_path": "none",
        "default_generation_settings": {"params": None, "n_ctx": 0},
        "ui_settings": {},
        "build_info": f"llamastudio {__version__}",
        "cors_proxy_enabled": False,
    }


class RouterApi:
    """``POST /models/load`` and ``/models/unload`` (the list is the gateway's own)."""

    def __init__(self, service: StudioService) -> None:
        self.service = service
        self._loads: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        for task in list(self._loads):
            task.cancel()

    async def answers_props(self, query: bytes, one_model: bool) -> bool:
        """Whether ``GET /props?query`` is the router's own (see the module docstring)."""
        if one_model or "model" in parse_qs(query.decode("latin-1")):
            return False
        return len(await self.service.model_names()) != 1

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
