"""RPC workers (``llamastudio worker`` on helper hosts): registered here, health-checked, shown
with their devices (kind ``rpc``) and used by configurations with ``--rpc auto|always``
(``workers/plan.py``). Writing one needs the management key, as every configuration write does; a
worker's key is stored and sent to its status endpoint, never returned."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, require_commands
from llamastudio.workers.registry import WorkerView

router = APIRouter(prefix="/api", tags=["workers"])


class WorkerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field(description="HOST:PORT of the worker's rpc-server.")
    key: str = Field(description="The worker's status key (stored, never returned).")
    status_port: int | None = Field(None, description="Its status endpoint's port (default: port + 1).")


@router.get("/workers")
async def list_workers(state: StateDep) -> list[WorkerView]:
    """Every worker, asked for its status now: devices, memory offered, llama.cpp build, link."""
    return await state.service.workers.check()


@router.post("/workers", status_code=201)
async def add_worker(state: StateDep, body: WorkerIn, request: Request) -> WorkerView:
    """Register (or replace) a worker; it is health-checked and its link measured once. Models
    then send their weights to it, and llama-server trusts its unauthenticated rpc-server: the
    command permission, like a model's ``proxy``."""
    require_commands(state, request, f"worker {body.endpoint[:200]} receives model weights")
    return await state.service.workers.add(body.endpoint, body.key, body.status_port)


@router.delete("/workers", status_code=204)
async def remove_worker(state: StateDep, endpoint: str) -> Response:
    await state.service.workers.remove(endpoint)
    return Response(status_code=204)
