"""Hardware profiles for what-if planning: ``cpu``, ``2x24GiB``, ``rtx3090,rtx4090``, ``2xa100-80gb``,
or a JSON file ``{"gpus": [{"name": "...", "memory": "24GiB"}], "ram": "128GiB"}``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llamastudio.errors import InvalidInput
from llamastudio.hardware.devices import Gpu, Hardware

GiB = 1 << 30
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": GiB,
    "gb": 10**9,
    "gib": GiB,
    "t": 1 << 40,
    "tb": 10**12,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_COUNT = re.compile(r"^(\d+)\s*[x×]\s*(.+)$", re.I)

# name → (marketing name, memory GiB, compute capability, backend)
KNOWN_GPUS: dict[str, tuple[str, float, str | None, str]] = {
    "rtx3060": ("NVIDIA GeForce RTX 3060", 12, "8.6", "CUDA"),
    "rtx3080": ("NVIDIA GeForce RTX 3080", 10, "8.6", "CUDA"),
    "rtx3090": ("NVIDIA GeForce RTX 3090", 24, "8.6", "CUDA"),
    "rtx4060ti": ("NVIDIA GeForce RTX 4060 Ti 16GB", 16, "8.9", "CUDA"),
    "rtx4070": ("NVIDIA GeForce RTX 4070", 12, "8.9", "CUDA"),
    "rtx4080": ("NVIDIA GeForce RTX 4080", 16, "8.9", "CUDA"),
    "rtx4090": ("NVIDIA GeForce RTX 4090", 24, "8.9", "CUDA"),
    "rtx5090": ("NVIDIA GeForce RTX 5090", 32, "12.0", "CUDA"),
    "a6000": ("NVIDIA RTX A6000", 48, "8.6", "CUDA"),
    "l40s": ("NVIDIA L40S", 48, "8.9", "CUDA"),
    "t4": ("NVIDIA T4", 16, "7.5", "CUDA"),
    "v100": ("NVIDIA V100 32GB", 32, "7.0", "CUDA"),
    "a100-40gb": ("NVIDIA A100 40GB", 40, "8.0", "CUDA"),
    "a100-80gb": ("NVIDIA A100 80GB", 80, "8.0", "CUDA"),
    "h100": ("NVIDIA H100 80GB", 80, "9.0", "CUDA"),
    "h200": ("NVIDIA H200", 141, "9.0", "CUDA"),
    "mi300x": ("AMD Instinct MI300X", 192, None, "ROCm"),
    "rx7900xtx": ("AMD Radeon RX 7900 XTX", 24, None, "ROCm"),
}


def parse_size(text: str | int | float) -> int:
    """``24GiB``, ``24 GB``, ``24576MiB``, ``24`` (GiB when no unit) → bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    m = _SIZE.match(str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise InvalidInput(f"not a memory size: {text!r} (try 24GiB)")
    unit = m.group(2).lower() or "gib"
    return int(float(m.group(1)) * _UNITS[unit])


def _gpu(item: str, index: int) -> Gpu:
    key = item.strip().lower().replace(" ", "")
    if key in KNOWN_GPUS:
        name, gib, cc, backend = KNOWN_GPUS[key]
        size = int(gib * GiB)
        return Gpu(index=index, name=name, total=size, free=size, backend=backend, compute_capability=cc)
    try:
        size = parse_size(item)
    except InvalidInput:
        known = ", ".join(sorted(KNOWN_GPUS))
        raise InvalidInput(f"unknown GPU {item!r}: use a size like 24GiB or one of {known}") from None
    return Gpu(index=index, name=f"GPU {size / GiB:g} GiB", total=size, free=size)


def parse_profile(spec: str, ram_total: int, ram_free: int, cores: int = 8) -> Hardware:
    """A Hardware from a profile spec; host RAM is the given (usually live) RAM unless a file sets it."""
    spec = spec.strip()
    if spec.lower() == "cpu":
        return Hardware((), cores, ram_total, ram_free, source=spec)
    if spec.endswith(".json") or Path(spec).is_file():
        return _from_file(Path(spec), ram_total, ram_free, cores)
    gpus: list[Gpu] = []
    for part in spec.split(","):
        m = _COUNT.match(part.strip())
        count, item = (int(m.group(1)), m.group(2)) if m else (1, part)
        if not 1 <= count <= 64:
            raise InvalidInput(f"bad GPU count in {part!r}")
        gpus += [_gpu(item, len(gpus) + i) for i in range(count)]
    unified = len(gpus) == 1 and gpus[0].backend == "Metal"
    return Hardware(tuple(gpus), cores, ram_total, ram_free, unified, source=spec)


def _from_file(path: Path, ram_total: int, ram_free: int, cores: int) -> Hardware:
    try:
        data: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"hardware profile {path} not found") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"hardware profile {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("gpus", []), list):
        raise InvalidInput(f"hardware profile {path}: expected {{'gpus': [...], 'ram': ...}}")
    gpus = []
    for i, g in enumerate(data.get("gpus", [])):
        if isinstance(g, str):
            gpus.append(_gpu(g, i))
            continue
        total = parse_size(g.get("memory", g.get("total", 0)))
        free = parse_size(g["free"]) if "free" in g else total
        gpus.append(
            Gpu(
                index=i,
                name=str(g.get("name", f"GPU {i}")),
                total=total,
                free=free,
                backend=str(g.get("backend", "CUDA")),
                nvlink_peers=tuple(g.get("nvlink", ())),
            )
        )
    ram = parse_size(data["ram"]) if "ram" in data else ram_total
    return Hardware(
        tuple(gpus), int(data.get("cores", cores)), ram, ram if "ram" in data else ram_free, source=str(path)
    )


def resolve(spec: str | None) -> Hardware:
    """``None`` → the live machine; otherwise a profile (with this host's RAM)."""
    from llamastudio.hardware.discover import discover, host

    if spec is None:
        return discover()
    cores, ram_total, ram_free = host()
    return parse_profile(spec, ram_total, ram_free, cores)


def resolve_named(spec: str) -> Hardware:
    """A profile from a request (API): names and sizes only, never a file on the studio's disk."""
    if spec.endswith(".json") or "/" in spec or "\\" in spec:
        raise InvalidInput("hardware: a profile spec like 2x24GiB or rtx4090 (files are not accepted here)")
    return resolve(spec)
