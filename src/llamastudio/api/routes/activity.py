"""The gateway's recent requests (``GET /api/activity``), newest first, those in flight included;
each change also arrives on ``/ws`` as an ``activity`` event (``gateway/activity.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from llamastudio.api.deps import StateDep
from llamastudio.gateway.activity import KEEP

router = APIRouter(prefix="/api/activity", tags=["live"])


class ActivityRequest(BaseModel):
    """One gateway request; figures the engine did not report are null."""

    id: int
    model: str
    path: str
    started_at: float = Field(description="seconds since the epoch")
    status: int | None = Field(description="HTTP status; null while in flight")
    queued_ms: float | None = Field(description="waiting for the model (queue, load)")
    duration_ms: float | None
    ttft_ms: float | None = Field(description="time to first token: duration minus generation time")
    tokens_in: int | None = Field(description="prompt tokens, cached ones included")
    cached: int | None = Field(description="prompt tokens reused from the engine's cache")
    tokens_out: int | None
    tokens_per_second: float | None = Field(description="generation speed (the engine's timings)")


@router.get("")
async def activity(
    state: StateDep,
    model: Annotated[str | None, Query(description="only this model's requests")] = None,
    limit: Annotated[int, Query(ge=1, le=KEEP)] = KEEP,
) -> list[ActivityRequest]:
    """The last requests through the gateway (and the UI's playground), newest first."""
    rows = [r for r in state.metrics.activity.snapshot() if model is None or r["model"] == model]
    return [ActivityRequest.model_validate(r) for r in rows[:limit]]
