"""The seed's LMDeploy paths, on the generic serving service (``services/lmdeploy.py``).

``model_id`` is a safetensors model's library id (``org/name`` for the Hugging Face cache); its
slashes are part of the path, so these routes are registered before ``/api/models/{id:path}/…``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, config_permit
from llamastudio.services.lmdeploy import LmdeployConfig, LmdeployModel, LmdeployService, LmdeployStatus

router = APIRouter(prefix="/api/models/safetensors", tags=["lmdeploy"])


class LmdeployConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Gateway name (default: the model id).")
    engine_id: str | None = Field(None, description="An LMDeploy engine (default: the default one).")
    backend: str | None = Field(None, description="turbomind or pytorch.")
    tp: int | None = Field(None, ge=1, le=64)
    session_len: int | None = Field(None, ge=1, le=1 << 24, description="Context length.")
    max_batch_size: int | None = Field(None, ge=1, le=1 << 16)
    cache_max_entry_count: float | None = Field(
        None, gt=0, le=1, description="Fraction of the memory left after the weights kept for the KV cache."
    )
    quant_policy: int | None = Field(None, description="KV cache quantization: 0, 4 or 8.")
    model_format: str | None = Field(None, description="hf, awq, gptq, fp8 ...")
    dtype: str | None = Field(None, description="auto, float16, bfloat16.")
    args: list[str] = Field(default_factory=list, description="Other `lmdeploy serve api_server` flags.")
    ttl: float | None = None


def _svc(state: StateDep) -> LmdeployService:
    return LmdeployService(state.service)


@router.get("/lmdeploy/status")
async def status(state: StateDep) -> LmdeployStatus:
    return await _svc(state).status()


@router.get("/{model_id:path}/lmdeploy/config")
async def get_config(state: StateDep, model_id: str) -> LmdeployConfig:
    return await _svc(state).get_config(model_id)


@router.put("/{model_id:path}/lmdeploy/config")
async def put_config(
    state: StateDep, request: Request, model_id: str, body: LmdeployConfigIn
) -> LmdeployConfig:
    return await _svc(state).put_config(
        model_id, body.model_dump(exclude_unset=True), config_permit(state, request)
    )


@router.post("/{model_id:path}/lmdeploy/start")
async def start(state: StateDep, model_id: str) -> LmdeployModel:
    return await _svc(state).start(model_id)


@router.post("/{model_id:path}/lmdeploy/stop")
async def stop(state: StateDep, model_id: str) -> LmdeployModel:
    return await _svc(state).stop(model_id)
