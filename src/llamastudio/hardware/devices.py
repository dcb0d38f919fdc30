"""What the planner knows about a machine: its GPUs (in CUDA order) and its host memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str  # marketing name, e.g. "NVIDIA GeForce RTX 4090"
    total: int  # bytes
    free: int  # bytes
    backend: str = "CUDA"  # CUDA | ROCm | Metal | Vulkan
    compute_capability: str | None = None
    pci_bus_id: str | None = None
    nvlink_peers: tuple[int, ...] = ()
    temperature_c: int | None = None
    utilization_pct: int | None = None
    power_w: float | None = None
    flash_attn: bool = True  # device can run flash attention kernels

    @property
    def device_name(self) -> str:
        """llama.cpp's name for the device in its logs (CUDA0, ROCm1, Vulkan0, MTL0)."""
        prefix = {"Metal": "MTL"}.get(self.backend, self.backend)
        return f"{prefix}{self.index}"


@dataclass(frozen=True, slots=True)
class Hardware:
    gpus: tuple[Gpu, ...] = ()
    cpu_cores: int = 1
    ram_total: int = 0
    ram_free: int = 0
    unified_memory: bool = False  # Apple silicon: GPU memory is host memory
    source: str = "live"  # "live", or the profile spec it came from
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for gpu, raw in zip(self.gpus, data["gpus"], strict=True):
            raw["device_name"] = gpu.device_name
        return data
