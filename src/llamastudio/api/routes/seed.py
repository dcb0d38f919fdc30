"""The seed's model paths the studio has under other names, as thin aliases over its own routes:
``POST /api/models/search`` (``GET /api/hub/search``), ``POST /api/models/download``
(``POST /api/downloads``), ``DELETE /api/models/{id}`` (``DELETE /api/models?id=``).

Bodies are the seed's, with its field names; a key the studio does not know is a 422 naming it.
The seed's other model paths are the studio's own routes, which answer in both shapes
(``seed_views.py``, ``seed_info.py``); its LMDeploy paths are ``safetensors.py``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep
from llamastudio.api.routes import downloads, hub, serving
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.hub.quants import group_files, quant_label

router = APIRouter(prefix="/api/models", tags=["seed API"])
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$")

Format = Literal["gguf", "safetensors"]


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="Words to find in repo names.")
    limit: int = Field(20, ge=1, le=100)
    model_format: Format = "gguf"


def _files(state: StateDep, repo: str, fmt: str) -> dict[str, Any]:
    """The seed's per-hit file keys: ``quantizations`` (GGUF) or ``safetensors_files`` and
    ``repo_files``. Blocking: one Hub call."""
    try:
        _, files = hub.client(state).files(repo)
    except StudioError as exc:  # a gated repo without a token: the hit stays, without files
        return {"quantizations": {}, "safetensors_files": [], "repo_files": [], "files_error": exc.message}
    if fmt == "gguf":
        groups = {
            g.label: {"filename": g.first.path, "size": g.size, "files": [f.path for f in g.files]}
            for g in group_files(files)
        }
        return {"quantizations": groups, "safetensors_files": [], "repo_files": []}
    tensors = [{"filename": f.path, "size": f.size} for f in files if f.path.endswith(".safetensors")]
    listed = [{"filename": f.path, "is_safetensors": f.path.endswith(".safetensors")} for f in files]
    return {"quantizations": {}, "safetensors_files": tensors, "repo_files": listed}


HUB_LANES = 4  # Hub listings of one search at a time


@router.post("/search", summary="Search the Hub (the seed's form of GET /api/hub/search)")
async def search(state: StateDep, body: SearchIn) -> list[dict[str, Any]]:
    """The Hub's repos with GGUF files (or safetensors checkpoints), each with the studio's
    fields and the seed's: ``name``, ``author``, ``model_format``, ``pipeline_tag``, and the
    files — ``quantizations`` ``{label: {filename, size, files}}`` for GGUF, the filename to
    pass to ``POST /api/models/download``."""
    hits = await asyncio.to_thread(
        hub.search, state, body.query, "downloads", body.limit, None, body.model_format
    )
    lanes = asyncio.Semaphore(HUB_LANES)  # a 100-hit search must not fill the shared thread pool

    async def files_of(repo: str) -> dict[str, Any]:
        async with lanes:
            return await asyncio.to_thread(_files, state, repo, body.model_format)

    files = await asyncio.gather(*(files_of(h["id"]) for h in hits))
    return [
        h
        | {
            "name": h["id"],
            "author": h["id"].split("/")[0],
            "model_format": body.model_format,
            "pipeline_tag": h.get("pipeline"),
        }
        | f
        for h, f in zip(hits, files, strict=True)
    ]


class DownloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    huggingface_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The repo, `org/name`.")
    filename: str = Field(min_length=1, description="A file of the repo (a split GGUF: any shard).")
    total_bytes: int | None = Field(
        None, ge=0, description="Accepted for the seed's clients; the studio reads sizes from the Hub."
    )
    model_format: Format = "gguf"


@router.post("/download", summary="Download a file (the seed's form of POST /api/downloads)")
async def download(state: StateDep, body: DownloadIn) -> dict[str, Any]:
    """A download job for ``filename`` (every shard of a split GGUF), as ``POST /api/downloads``
    makes it; the answer is the job with the seed's ``message``, ``huggingface_id``, ``task_id``
    (the job id: follow it on ``/api/jobs/{id}`` or ``/ws``)."""
    suffix = ".gguf" if body.model_format == "gguf" else ".safetensors"
    if not body.filename.endswith(suffix):
        raise InvalidInput(f"filename must end with {suffix} for {body.model_format} downloads")
    split = body.model_format == "gguf" and _SHARD.search(body.filename)
    create = downloads.DownloadCreate(
        repo=body.huggingface_id,
        quant=quant_label(body.filename) if split else None,
        file=None if split else body.filename,
        format=body.model_format,
    )
    job = await downloads.create(state, create)
    return job | {"message": "Download started", "huggingface_id": body.huggingface_id, "task_id": job["id"]}


@router.delete("/{id:path}", summary="Delete a local model (the seed's form of DELETE /api/models?id=)")
async def delete(state: StateDep, id: str, delete_files: bool = False) -> dict[str, Any]:
    """Remove a library model (models running it are stopped first): a Hugging Face cache
    model's files are deleted, an added file is forgotten (its file deleted only with
    ``delete_files``); and the configuration stored under that id, as the seed kept a model's
    configuration with the model (``configuration_deleted``)."""
    removed = await hub.remove_model(state, id, delete_files)
    try:
        await serving.delete_config(state, id)
        deleted = True
    except NotFound:
        deleted = False
    return removed | {"configuration_deleted": deleted, "message": "Model quantization deleted"}
