"""``GET /api/gpu-info``: this machine's GPUs, NVLink topology and host memory."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from llamastudio.api.routes import seed_info
from llamastudio.hardware.discover import discover
from llamastudio.hardware.topology import classify, nvlink_groups

router = APIRouter(prefix="/api", tags=["hardware"])


@router.get("/gpu-info")
async def gpu_info() -> dict[str, Any]:
    hw = await asyncio.to_thread(discover)  # NVML and vulkaninfo calls block
    studio = hw.to_json() | {
        "topology": classify(hw.gpus),
        "nvlink_groups": nvlink_groups(hw.gpus),
        "cuda_available": any(g.backend == "CUDA" for g in hw.gpus),
    }
    return seed_info.gpu_info(studio)  # and the seed's fields beside the studio's
