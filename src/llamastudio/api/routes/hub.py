"""Hub search, quants with fit, the local library, and the Hugging Face token (write-only)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from llamastudio.api.deps import StateDep
from llamastudio.api.routes import seed_info
from llamastudio.errors import InvalidInput
from llamastudio.hub.client import HubClient
from llamastudio.hub.detail import repo_detail
from llamastudio.hub.remote import HeaderCache
from llamastudio.hub.token import effective_token, store_token, token_source

router = APIRouter(prefix="/api", tags=["hub"])


def client(state: StateDep) -> HubClient:
    return HubClient(token=effective_token(state.settings.data_dir) or "")


Format = Literal["gguf", "safetensors"]


@router.get("/hub/search")
def search(
    state: StateDep,
    q: str = "",
    sort: str = "downloads",
    limit: int = 20,
    author: str | None = None,
    format: Format = "gguf",
) -> list[dict[str, Any]]:
    """Repos with GGUF files, or with ``format=safetensors`` transformers checkpoints."""
    if not 1 <= limit <= 100:
        raise InvalidInput("limit must be between 1 and 100")
    return client(state).search(q, sort, limit, author, format)


@router.get("/hub/repos/{owner}/{name}/quants")
async def quants(
    state: StateDep,
    owner: str,
    name: str,
    hardware: str | None = None,
    revision: str | None = None,
    format: Format | None = None,
) -> dict[str, Any]:
    """Every GGUF quant, or the safetensors checkpoint (``format``; default: GGUF when the repo
    has GGUF files), with size, memory and fit — read from headers, nothing downloaded."""
    # a named profile, else what the runtime plans for (LLAMASTUDIO_HARDWARE or this machine)
    hw = await state.service.hardware(hardware)
    repo = f"{owner}/{name}"

    def table() -> dict[str, Any]:  # the token file, the Hub's file list, remote headers
        c = client(state)
        cache = HeaderCache(state.settings.header_cache_dir, c.token)
        return repo_detail(c, repo, revision, hw, cache, format)

    return await asyncio.to_thread(table)


class AddPath(BaseModel):
    path: str = Field(
        description="Absolute path of a .gguf file, a directory of them, or a transformers checkpoint "
        "directory (config.json + *.safetensors) on the studio's machine."
    )


@router.get("/models")
async def models(state: StateDep) -> list[dict[str, Any]]:
    """The library; each entry also carries the seed's group keys (``seed_info.py``)."""
    return await seed_info.library_entries(state, await state.service.library_models())


@router.post("/models", status_code=201)
async def add_model(state: StateDep, body: AddPath) -> list[dict[str, Any]]:
    path = Path(body.path)
    if not path.is_absolute() or "\0" in body.path:
        raise InvalidInput("path must be absolute")
    return [m.to_json() for m in await state.service.add_to_library(path)]


@router.delete("/models")
async def remove_model(state: StateDep, id: str, delete_files: bool = False) -> dict[str, list[str]]:
    """Models running its files are stopped first (after their requests in flight)."""
    return {"removed": await state.service.remove_from_library(id, delete_files)}


class TokenBody(BaseModel):
    token: str


@router.get("/settings/hf-token")
def token_status(state: StateDep) -> dict[str, Any]:
    source = token_source(state.settings.data_dir)
    return {"set": source is not None, "source": source, "read_only": source == "env"}


@router.put("/settings/hf-token", status_code=204)
def set_token(state: StateDep, body: TokenBody) -> Response:
    store_token(state.settings.data_dir, body.token)
    return Response(status_code=204)


@router.delete("/settings/hf-token", status_code=204)
def delete_token(state: StateDep) -> Response:
    store_token(state.settings.data_dir, None)
    return Response(status_code=204)
