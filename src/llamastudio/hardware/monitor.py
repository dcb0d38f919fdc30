"""Live system stats for the UI: CPU, RAM, disk, and each GPU's memory, utilisation and
temperature, sampled every ``interval`` seconds while someone listens, with a short history."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil

from llamastudio.aio import cancel_and_wait
from llamastudio.events import EventBus
from llamastudio.hardware.discover import discover
from llamastudio.hardware.nvidia import discover_nvidia, load_nvml


class SystemMonitor:
    def __init__(self, bus: EventBus, disk_path: Path, interval: float = 1.5, history: int = 120) -> None:
        self.bus = bus
        self.disk_path = disk_path
        self.interval = interval
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._task: asyncio.Task[None] | None = None
        self._nvidia = False

    async def start(self) -> None:
        hw = await asyncio.to_thread(discover)
        self._nvidia = any(g.backend == "CUDA" for g in hw.gpus)
        self._static_gpus = hw.gpus
        psutil.cpu_percent(None)  # prime the counter
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.bus.subscribers and self.history:
                continue  # nobody watches: keep the last sample, spend nothing
            sample = await asyncio.to_thread(self.sample)
            self.history.append(sample)
            self.bus.publish({"type": "stats", "stats": sample})

    def _gpus(self) -> list[dict[str, Any]]:
        gpus = self._static_gpus
        if self._nvidia:
            nvml = load_nvml()
            if nvml is not None:
                try:
                    gpus = tuple(discover_nvidia(nvml))
                finally:
                    nvml.nvmlShutdown()
        return [
            {
                "index": g.index,
                "name": g.name,
                "device": g.device_name,
                "total": g.total,
                "used": g.total - g.free,
                "utilization_pct": g.utilization_pct,
                "temperature_c": g.temperature_c,
            }
            for g in gpus
        ]

    def sample(self) -> dict[str, Any]:
        mem = psutil.virtual_memory()
        disk = shutil.disk_usage(self.disk_path)
        return {
            "t": time.time(),
            "cpu_percent": psutil.cpu_percent(None),
            "cpu_count": psutil.cpu_count() or 1,
            "ram_total": mem.total,
            "ram_used": mem.total - mem.available,
            "disk_total": disk.total,
            "disk_used": disk.used,
            "gpus": self._gpus(),
        }
