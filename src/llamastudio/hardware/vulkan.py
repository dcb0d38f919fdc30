"""Vulkan devices from ``vulkaninfo``: names and types from ``--summary``, memory from the full
report's ``memoryHeaps`` (device-local heap size, and its budget as free memory)."""

from __future__ import annotations

import re
import shutil
import subprocess

from llamastudio.hardware.devices import Gpu

_GPU = re.compile(r"^GPU(\d+):\s*$", re.M)
_FIELD = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$", re.M)
_HEAP = re.compile(
    r"memoryHeaps\[\d+\]:\s*\n\s*size\s*=\s*(\d+)[^\n]*\n(?:\s*budget\s*=\s*(\d+)[^\n]*\n)?"
    r"(?:[^\n]*\n){0,3}?\s*flags:[^\n]*\n((?:\s+MEMORY_HEAP_\w+\n)*)"
)


def _sections(text: str) -> dict[int, str]:
    marks = list(_GPU.finditer(text))
    return {
        int(m.group(1)): text[m.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)]
        for i, m in enumerate(marks)
    }


def parse_vulkaninfo(summary: str, full: str = "") -> list[Gpu]:
    heaps: dict[int, tuple[int, int]] = {}
    for idx, body in _sections(full).items():
        local = [
            (int(m.group(1)), int(m.group(2) or m.group(1)))
            for m in _HEAP.finditer(body)
            if "DEVICE_LOCAL" in m.group(3)
        ]
        if local:
            heaps[idx] = max(local)
    out: list[Gpu] = []
    for idx, body in sorted(_sections(summary).items()):
        fields = dict(_FIELD.findall(body))
        if fields.get("deviceType", "").endswith("_CPU"):
            continue  # llvmpipe and other software rasterizers
        total, free = heaps.get(idx, (0, 0))
        out.append(
            Gpu(
                index=len(out),
                name=fields.get("deviceName", f"Vulkan GPU{idx}"),
                total=total,
                free=free,
                backend="Vulkan",
            )
        )
    return out


def discover_vulkan() -> list[Gpu]:
    exe = shutil.which("vulkaninfo")
    if not exe:
        return []
    try:
        summary = subprocess.run([exe, "--summary"], capture_output=True, text=True, timeout=15).stdout
        full = subprocess.run([exe], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return parse_vulkaninfo(summary, full)
