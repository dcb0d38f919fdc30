"""Peers: remote OpenAI-compatible servers whose models the gateway lists and routes to
(``services/peers.py``). Writing one needs the management key, as every configuration write does;
a peer's API key is stored and sent upstream, never returned."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, require_commands
from llamastudio.services.peers import PeerView
from llamastudio.serving.peers import PeerSpec

router = APIRouter(prefix="/api", tags=["peers"])


class PeerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique name (letters, digits, . _ -); shown as the models' owned_by.")
    url: str = Field(description="http(s)://host[:port][/prefix] of its OpenAI API (the /v1 is added).")
    api_key: str | None = Field(None, description="Sent to the peer as a Bearer key; never returned.")
    models: list[str] = Field(default_factory=list, description="Only these ids (default: all it lists).")
    strip_params: list[str] = Field(default_factory=list, description="Body fields removed.")
    set_params: dict[str, Any] = Field(default_factory=dict, description="Body fields set.")


@router.get("/peers")
async def list_peers(state: StateDep) -> list[PeerView]:
    """Every peer with its health (``available``, ``reason``) and the models routed to it."""
    return state.service.peers.views()


@router.post("/peers", status_code=201)
async def add_peer(state: StateDep, body: PeerIn, request: Request) -> PeerView:
    """Add (or replace) a peer; it is health-checked once before the answer. Requests (and the
    peer's key) then go to the host it names: the command permission, like a model's ``proxy``."""
    require_commands(state, request, f"peer {body.name!r} relays requests to {body.url[:200]}")
    return await state.service.peers.add(PeerSpec(**body.model_dump()))


@router.delete("/peers/{name}", status_code=204)
async def remove_peer(state: StateDep, name: str) -> Response:
    await state.service.peers.remove(name)
    return Response(status_code=204)
