"""Download jobs: start, list, inspect, cancel, pause, resume (jobs of the one job system, in the
shape the UI and CLI have always read: bytes, speed, ETA, paths)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from llamastudio.api.deps import StateDep
from llamastudio.errors import InvalidInput

router = APIRouter(prefix="/api/downloads", tags=["downloads"])


class DownloadCreate(BaseModel):
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    quant: str | None = None
    file: str | None = None
    revision: str | None = None
    format: Literal["gguf", "safetensors"] | None = Field(
        None,
        description="gguf: a quant's files; safetensors: the transformers checkpoint (shards, configs, "
        "tokenizer). Default: gguf when the repo has GGUF files, else its checkpoint.",
    )


@router.post("", status_code=201)
async def create(state: StateDep, body: DownloadCreate) -> dict[str, Any]:
    if body.file and body.quant:
        raise InvalidInput("give a quant or a file, not both")
    return await state.downloads.submit(body.repo, body.quant, body.file, body.revision, body.format)


@router.get("")
def list_jobs(state: StateDep) -> list[dict[str, Any]]:
    return state.downloads.list()


@router.get("/{job_id}")
def get_job(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.downloads.get(job_id)


# actions run on the loop: they start tasks and set the jobs' asyncio events
@router.post("/{job_id}/cancel")
async def cancel(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.downloads.cancel(job_id)


@router.post("/{job_id}/pause")
async def pause(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.downloads.pause(job_id)


@router.post("/{job_id}/resume")
async def resume(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.downloads.resume(job_id)
