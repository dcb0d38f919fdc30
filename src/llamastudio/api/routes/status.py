"""``GET /api/status``: is the studio up, which version, where its data lives."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel

from llamastudio import __version__
from llamastudio.api.deps import StateDep

router = APIRouter(prefix="/api", tags=["status"])


class StatusPublic(BaseModel):
    name: str = "llamastudio"
    version: str
    uptime_s: float
    data_dir: Path
    db_ok: bool
    db_revision: str
    llama_server: Path | None
    gateway_port: int


@router.get("/status")
async def get_status(state: StateDep) -> StatusPublic:
    db = await state.service.database_status()  # waits while a writer holds the lock
    return StatusPublic(
        version=__version__,
        uptime_s=round(time.monotonic() - state.started, 3),
        data_dir=state.settings.data_dir,
        db_ok=db.ok,
        db_revision=db.revision,
        llama_server=state.settings.llama_server,
        gateway_port=state.settings.gateway_port,
    )
