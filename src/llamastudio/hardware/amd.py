"""AMD GPUs: ``amdsmi`` when importable, else ``rocm-smi --json`` output."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from llamastudio.hardware.devices import Gpu


def parse_rocm_smi(text: str) -> list[Gpu]:
    """Parse ``rocm-smi --showproductname --showmeminfo vram --showbus --json``."""
    data = json.loads(text)
    cards = sorted((k for k in data if k.startswith("card")), key=lambda k: int(k[4:]))
    out = []
    for i, key in enumerate(cards):
        card = data[key]
        total = int(card.get("VRAM Total Memory (B)", 0))
        used = int(card.get("VRAM Total Used Memory (B)", 0))
        name = card.get("Card Series") or card.get("Card series") or card.get("Card model") or "AMD GPU"
        out.append(
            Gpu(
                index=i,
                name=name,
                total=total,
                free=total - used,
                backend="ROCm",
                pci_bus_id=(card.get("PCI Bus") or "").lower() or None,
                compute_capability=card.get("GFX Version"),
            )
        )
    return out


def discover_amd_smi(amdsmi: Any) -> list[Gpu]:
    amdsmi.amdsmi_init()
    try:
        out = []
        for i, h in enumerate(amdsmi.amdsmi_get_processor_handles()):
            total = int(amdsmi.amdsmi_get_gpu_memory_total(h, amdsmi.AmdSmiMemoryType.VRAM))
            used = int(amdsmi.amdsmi_get_gpu_memory_usage(h, amdsmi.AmdSmiMemoryType.VRAM))
            info = amdsmi.amdsmi_get_gpu_asic_info(h)
            out.append(
                Gpu(
                    index=i,
                    name=str(info.get("market_name", "AMD GPU")),
                    total=total,
                    free=total - used,
                    backend="ROCm",
                    pci_bus_id=str(amdsmi.amdsmi_get_gpu_device_bdf(h)).lower(),
                )
            )
        return out
    finally:
        amdsmi.amdsmi_shut_down()


def discover_amd() -> list[Gpu]:
    try:
        import amdsmi  # type: ignore[import-not-found]

        return discover_amd_smi(amdsmi)
    except Exception:
        pass
    exe = shutil.which("rocm-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--showproductname", "--showmeminfo", "vram", "--showbus", "--json"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return parse_rocm_smi(out.stdout)
    except (subprocess.SubprocessError, OSError, ValueError):
        return []
