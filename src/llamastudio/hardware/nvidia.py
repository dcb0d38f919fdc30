"""NVIDIA GPUs through NVML (``nvidia-ml-py``), in CUDA order, honouring CUDA_VISIBLE_DEVICES.

The NVML module is injected so tests replay recorded readings through the same code.
"""

from __future__ import annotations

import os
from typing import Any

from llamastudio.hardware.devices import Gpu

MAX_NVLINKS = 18


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bus(value: Any) -> str:
    """Normalize a PCI bus id: NVML reports 8 hex digits of domain, CUDA 4; compare on the tail."""
    bus = _text(value).lower()
    domain, _, rest = bus.partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else bus


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVML raises NVMLError_NotSupported & co. for optional readings
        return None


def load_nvml() -> Any | None:
    """The pynvml module, initialised; None when there is no driver or no package."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def discover_nvidia(nvml: Any, visible: str | None = None) -> list[Gpu]:
    """Every visible NVIDIA GPU, ordered by PCI bus id (CUDA_DEVICE_ORDER=PCI_BUS_ID), reindexed."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    raw = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        cc = _try(nvml.nvmlDeviceGetCudaComputeCapability, h)
        util = _try(nvml.nvmlDeviceGetUtilizationRates, h)
        power = _try(nvml.nvmlDeviceGetPowerUsage, h)
        peers = []
        for link in range(MAX_NVLINKS):
            if _try(nvml.nvmlDeviceGetNvLinkState, h, link) != 1:
                continue
            remote = _try(nvml.nvmlDeviceGetNvLinkRemotePciInfo, h, link)
            if remote is not None:
                peers.append(_bus(remote.busId))
        raw.append(
            {
                "name": _text(nvml.nvmlDeviceGetName(h)),
                "uuid": _text(_try(nvml.nvmlDeviceGetUUID, h) or ""),
                "bus": _bus(nvml.nvmlDeviceGetPciInfo(h).busId),
                "total": int(mem.total),
                "free": int(mem.free),
                "cc": f"{cc[0]}.{cc[1]}" if cc else None,
                "temp": _try(nvml.nvmlDeviceGetTemperature, h, 0),
                "util": util.gpu if util is not None else None,
                "power": power / 1000 if power is not None else None,
                "peers": peers,
            }
        )
    raw.sort(key=lambda d: d["bus"])
    raw = _filter_visible(raw, visible)
    index_of_bus = {d["bus"]: i for i, d in enumerate(raw)}
    return [
        Gpu(
            index=i,
            name=d["name"],
            total=d["total"],
            free=d["free"],
            backend="CUDA",
            compute_capability=d["cc"],
            pci_bus_id=d["bus"],
            temperature_c=d["temp"],
            utilization_pct=d["util"],
            power_w=d["power"],
            nvlink_peers=tuple(sorted({index_of_bus[p] for p in d["peers"] if p in index_of_bus})),
            flash_attn=d["cc"] is None or float(d["cc"]) >= 6.0,
        )
        for i, d in enumerate(raw)
    ]


def _filter_visible(raw: list[dict[str, Any]], visible: str | None) -> list[dict[str, Any]]:
    if visible is not None and visible.strip().lower() == "all":  # the seed studio's default
        return raw
    if visible is None or visible.strip() == "":
        return raw if visible is None else []
    out = []
    for token in (t.strip() for t in visible.split(",")):
        if token.isdigit():
            if int(token) >= len(raw):
                break  # CUDA stops at the first invalid entry
            out.append(raw[int(token)])
        else:
            match = [d for d in raw if d["uuid"].startswith(token)]
            if not match:
                break
            out.append(match[0])
    return out
