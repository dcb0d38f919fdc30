"""``GET /api/status``: is the studio up, which version, where its data lives — and the seed's
system status beside it: CPU, memory and disk (``system``), the running models
(``running_instances``), the gateway (``proxy_status``) and the LMDeploy listener
(``lmdeploy_status``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
from fastapi import APIRouter
from pydantic import BaseModel, Field

from llamastudio import __version__
from llamastudio.api.deps import AppState, StateDep
from llamastudio.api.routes import safetensors
from llamastudio.api.routes.seed_views import gateway_url

router = APIRouter(prefix="/api", tags=["status"])
_RUNTIME_TYPES = {"llama.cpp": "llama_cpp"}  # the seed's name; other engine kinds keep theirs


class Memory(BaseModel):
    total: int
    available: int
    percent: float


class Disk(BaseModel):
    total: int
    used: int
    free: int
    percent: float


class SystemFigures(BaseModel):
    cpu_percent: float = Field(description="Since the previous reading (the monitor's, or this one's).")
    memory: Memory
    disk: Disk = Field(description="The file system of the data directory.")


class RunningInstance(BaseModel):
    id: str = Field(description="The model's name (the studio has no instance ids).")
    model_id: str = Field(description="What it runs: a library id or a path ('' for a command).")
    port: int = Field(description="Where clients reach it: the gateway, or the LMDeploy listener.")
    runtime_type: str = Field(description="llama_cpp, lmdeploy, vllm, sglang or command.")
    proxy_model_name: str = Field(description="The name to send as `model`.")
    started_at: str | None = Field(None, description="Not tracked by the studio: null.")
    state: str


class Endpoint(BaseModel):
    enabled: bool
    port: int
    endpoint: str


class LmdeployEndpoint(Endpoint):
    running: bool
    current_instance: dict[str, Any] | None = Field(description="The first ready LMDeploy model.")


class StatusPublic(BaseModel):
    name: str = "llamastudio"
    version: str
    uptime_s: float
    data_dir: Path
    db_ok: bool
    db_revision: str
    llama_server: Path | None
    gateway_port: int
    # the seed's
    system: SystemFigures
    running_instances: list[RunningInstance]
    proxy_status: Endpoint
    lmdeploy_status: LmdeployEndpoint


def _system(data_dir: Path, recent: dict[str, Any] | None) -> SystemFigures:
    """Blocking: psutil and the file system. ``recent``: the monitor's last sample, whose CPU
    reading is used while fresh (reading it here would shorten the monitor's next interval)."""
    mem, disk = psutil.virtual_memory(), shutil.disk_usage(data_dir)
    fresh = recent is not None and time.time() - recent["t"] < 5
    return SystemFigures(
        cpu_percent=recent["cpu_percent"] if recent is not None and fresh else psutil.cpu_percent(None),
        memory=Memory(total=mem.total, available=mem.available, percent=mem.percent),
        disk=Disk(
            total=disk.total,
            used=disk.used,
            free=disk.free,
            percent=round(disk.used / disk.total * 100, 1) if disk.total else 0.0,
        ),
    )


async def _running(state: AppState) -> list[RunningInstance]:
    s, models = state.settings, {m.name: m.model for m in await state.service.served(refresh=False)}
    out = []
    for m in await state.service.running():
        kind = await state.service.kind_of(m.name) or ""
        port = s.lmdeploy_port if kind == "lmdeploy" and s.lmdeploy_port > 0 else s.gateway_port
        out.append(
            RunningInstance(
                id=m.name,
                model_id=models.get(m.name, ""),
                port=port,
                runtime_type=_RUNTIME_TYPES.get(kind, kind),
                proxy_model_name=m.name,
                state=m.state,
            )
        )
    return out


async def _lmdeploy(state: AppState) -> LmdeployEndpoint:
    found = await safetensors.status(state)
    ready = [m for m in found.models if m.state == "ready"]
    port = found.port
    url = gateway_url(state.settings, port) + "/v1/chat/completions" if port > 0 else ""
    current = ready[0].model_dump(mode="json") if ready else None
    return LmdeployEndpoint(
        enabled=port > 0, port=port, endpoint=url, running=bool(ready), current_instance=current
    )


@router.get("/status")
async def get_status(state: StateDep) -> StatusPublic:
    db = await state.service.database_status()  # waits while a writer holds the lock
    settings, history = state.settings, state.monitor.history
    recent = history[-1] if history else None
    return StatusPublic(
        version=__version__,
        uptime_s=round(time.monotonic() - state.started, 3),
        data_dir=settings.data_dir,
        db_ok=db.ok,
        db_revision=db.revision,
        llama_server=settings.llama_server,
        gateway_port=settings.gateway_port,
        system=await asyncio.to_thread(_system, settings.data_dir, recent),
        running_instances=await _running(state),
        proxy_status=Endpoint(
            enabled=True,
            port=settings.gateway_port,
            endpoint=gateway_url(settings) + "/v1/chat/completions",
        ),
        lmdeploy_status=await _lmdeploy(state),
    )
