"""Ollama's and LM Studio's models added in place (``services/foreign.py``): a preview of what a
store holds, and adding them all (each a configuration whose model is the store's own file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, config_permit
from llamastudio.errors import InvalidInput
from llamastudio.services.foreign import ForeignResult, add_foreign, preview

router = APIRouter(prefix="/api/library", tags=["library"])
Source = Literal["ollama", "lmstudio"]


class ForeignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Source = Field(description="Whose store: ollama or lmstudio.")
    path: str | None = Field(
        None,
        description="Absolute path of its models directory on the studio's machine (default: the "
        "tool's own: $OLLAMA_MODELS or ~/.ollama/models; ~/.lmstudio/models or ~/.cache/lm-studio/models).",
    )


def _root(path: str | None) -> Path | None:
    if path is None:
        return None
    if not Path(path).is_absolute() or "\0" in path:
        raise InvalidInput("path must be absolute")
    return Path(path)


@router.get("/foreign")
async def preview_foreign(source: Source, path: str | None = None) -> ForeignResult:
    """The models a store holds, with the flags and notes each would get (nothing is stored)."""
    return await preview(source, _root(path))


@router.post("/foreign", status_code=201)
async def add_foreign_models(state: StateDep, request: Request, body: ForeignIn) -> ForeignResult:
    """Add every usable model of the store, in place (one transaction); unusable ones are listed
    in ``skipped`` with the reason."""
    return await add_foreign(state.service, body.source, _root(body.path), config_permit(state, request))
