"""The seed's shapes of what the studio lists — the library (``GET /api/models``), this machine's
GPUs (``GET /api/gpu-info``) and its running models (``GET /api/status``) — added beside the
studio's own fields, so one answer serves the studio's UI and the seed's clients.

The seed grouped a repo's quantizations into one entry; the studio lists one entry per local
model (the UI reads that list), so each entry carries the seed's group keys with its own
quantization as the group's only member: a repo with two quants is two groups.
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamastudio.api.deps import AppState
from llamastudio.api.routes.seed_params import from_args
from llamastudio.hub.library import LocalModel
from llamastudio.services.snapshots import ServedModel

_VENDORS = {"CUDA": "nvidia", "ROCm": "amd", "Metal": "apple"}


def _mtime(path: str) -> str | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC).isoformat()
    except OSError:
        return None


def _base_name(m: LocalModel) -> str:
    """The file name without the shard suffix and the quant (the seed's ``base_model_name``)."""
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(m.path).name.removesuffix(".gguf"))
    cut = re.sub(rf"[-._]{re.escape(m.quant)}$", "", stem, flags=re.IGNORECASE)
    return cut or stem


def _entry(
    m: LocalModel, served: ServedModel | None, config: dict[str, Any], mtime: str | None
) -> dict[str, Any]:
    base = _base_name(m)
    model_type = m.facts.get("architecture") if isinstance(m.facts, dict) else None
    quantization = {
        "id": m.id,
        "name": Path(m.path).name.removesuffix(".gguf"),
        "file_path": m.path,
        "file_size": m.size,
        "quantization": m.quant,
        "downloaded_at": mtime,
        "is_active": served is not None and served.state in ("starting", "ready"),
        "has_config": served is not None and served.configured,
        "huggingface_id": m.repo,
        "base_model_name": base,
        "model_type": model_type,
        "config": config,
        "proxy_name": served.name if served is not None else m.served_name or m.id,
    }
    group = {
        "base_model_name": base,
        "huggingface_id": m.repo,
        "model_type": model_type,
        "author": m.repo.split("/")[0] if m.repo and "/" in m.repo else "",
        "quantizations": [quantization],
    }
    return m.to_json() | group


async def library_entries(state: AppState, models: list[LocalModel]) -> list[dict[str, Any]]:
    """Each local model as the studio lists it, plus the seed's group keys (module docstring)."""
    served: dict[str, ServedModel] = {}
    for s in await state.service.served(refresh=False):
        if s.model not in served or (s.configured and not served[s.model].configured):
            served[s.model] = s
    stored = {c.name: c for c in await state.service.configurations()}  # one read, not one per model
    configs: dict[str, dict[str, Any]] = {}
    for m in models:
        user = served.get(m.id)
        cfg = stored.get(user.name) if user is not None and user.configured else None
        if cfg is not None:
            configs[m.id] = {k: v for k, v in from_args(cfg.args).items() if v is not None}
    mtimes = await asyncio.to_thread(lambda: {m.id: _mtime(m.path) for m in models})
    return [_entry(m, served.get(m.id), configs.get(m.id, {}), mtimes[m.id]) for m in models]


def gpu_info(data: dict[str, Any]) -> dict[str, Any]:
    """``GET /api/gpu-info``'s studio fields plus the seed's: ``vendor``, ``cuda_version``,
    ``device_count``, ``total_vram``, ``available_vram``, ``cpu_only_mode``, ``cpu_threads``, and
    per GPU ``memory {total, free, used}``, ``temperature``, ``utilization {gpu, memory}``."""
    gpus = [
        g
        | {
            "memory": {"total": g["total"], "free": g["free"], "used": g["total"] - g["free"]},
            "temperature": g.get("temperature_c"),
            "utilization": {"gpu": g.get("utilization_pct"), "memory": None},
        }
        for g in data["gpus"]
    ]
    vendors = {_VENDORS.get(g.get("backend", ""), "") for g in gpus} - {""}
    return data | {
        "gpus": gpus,
        "vendor": vendors.pop() if len(vendors) == 1 else None,
        "cuda_version": "Unknown",  # the driver's CUDA version is not read (NVML gives the driver's)
        "device_count": len(gpus),
        "total_vram": sum(g["total"] for g in gpus),
        "available_vram": sum(g["free"] for g in gpus),
        "cpu_only_mode": not gpus,
        "cpu_threads": os.cpu_count() or 1,
    }
