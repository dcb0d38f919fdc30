"""The live machine: GPUs from the first backend that finds any (NVIDIA, AMD, Metal, Vulkan) + host."""

from __future__ import annotations

import os
import platform
import subprocess

import psutil

from llamastudio.hardware.amd import discover_amd
from llamastudio.hardware.devices import Gpu, Hardware
from llamastudio.hardware.nvidia import discover_nvidia, load_nvml
from llamastudio.hardware.vulkan import discover_vulkan

# Metal's recommendedMaxWorkingSetSize is not readable without the Metal API; macOS grants about
# three quarters of unified memory to the GPU by default.
METAL_WORKING_SET = 0.75


def metal_gpu(ram_total: int, ram_free: int, name: str = "Apple GPU") -> Gpu:
    budget = int(ram_total * METAL_WORKING_SET)
    return Gpu(index=0, name=name, total=budget, free=min(budget, ram_free), backend="Metal")


def _discover_metal(ram_total: int, ram_free: int) -> list[Gpu]:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return []
    try:
        brand = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        brand = "Apple silicon"
    return [metal_gpu(ram_total, ram_free, brand or "Apple silicon")]


def host() -> tuple[int, int, int]:
    mem = psutil.virtual_memory()
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1, int(mem.total), int(mem.available)


def discover() -> Hardware:
    cores, ram_total, ram_free = host()
    gpus: list[Gpu] = []
    notes: list[str] = []
    nvml = load_nvml()
    if nvml is not None:
        try:
            gpus = discover_nvidia(nvml)
        finally:
            nvml.nvmlShutdown()
    if not gpus:
        gpus = discover_amd()
    if not gpus:
        gpus = _discover_metal(ram_total, ram_free)
    if not gpus:
        gpus = discover_vulkan()
    if not gpus:
        notes.append("no GPU found: planning for the CPU")
    unified = bool(gpus) and gpus[0].backend == "Metal"
    return Hardware(tuple(gpus), cores, ram_total, ram_free, unified, "live", tuple(notes))
