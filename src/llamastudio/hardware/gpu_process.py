"""GPU memory one process holds, per device, from NVML (NVIDIA only).

Devices are named as llama.cpp names them (``CUDA0`` …): CUDA's order (PCI bus id) among the
GPUs ``CUDA_VISIBLE_DEVICES`` shows the process, as ``nvidia.discover_nvidia`` orders them. NVML
reports the processes of every container by their pid in the *host's* namespace: a studio in its
own pid namespace finds none of its engines (an empty answer, never a wrong one).
"""

from __future__ import annotations

import functools
from typing import Any

from llamastudio.hardware.nvidia import _bus, _filter_visible, _text, _try, load_nvml


@functools.cache
def nvml() -> Any | None:
    """The NVML module, initialised once per process; None without a driver (CPU machines)."""
    return load_nvml()


def process_memory(pid: int, module: Any | None = None, visible: str | None = None) -> dict[str, int]:
    """Bytes of GPU memory process ``pid`` holds on each device where it holds any; ``visible``:
    the CUDA_VISIBLE_DEVICES the process was started with (None: all GPUs)."""
    lib = module if module is not None else nvml()
    if lib is None:
        return {}
    raw = []
    for i in range(lib.nvmlDeviceGetCount()):
        h = lib.nvmlDeviceGetHandleByIndex(i)
        raw.append(
            {
                "handle": h,
                "bus": _bus(lib.nvmlDeviceGetPciInfo(h).busId),
                "uuid": _text(_try(lib.nvmlDeviceGetUUID, h) or ""),
            }
        )
    raw.sort(key=lambda d: d["bus"])
    shown = raw if visible is None else _filter_visible(raw, visible)
    out: dict[str, int] = {}
    for index, d in enumerate(shown):
        procs = _try(lib.nvmlDeviceGetComputeRunningProcesses, d["handle"]) or []
        used = sum(int(p.usedGpuMemory or 0) for p in procs if p.pid == pid)
        if used > 0:
            out[f"CUDA{index}"] = used
    return out
