"""Host CPU facts that change llama.cpp's memory accounting."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

# ggml-cpu/repack.cpp: weight types the CPU backend re-lays-out into a separate CPU_REPACK buffer
# (when the weight's ne[1] is a multiple of 8), by the x86 feature that enables it.
X86_REPACK = {"avx2": ("Q4_0", "Q4_K", "IQ4_NL", "MXFP4"), "avx512f": ("Q2_K",)}


@cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def repack_types(flags: frozenset[str] | None = None) -> frozenset[str]:
    """ggml types this host's CPU backend repacks (x86 only; other CPUs: none modelled yet)."""
    if platform.machine() not in ("x86_64", "AMD64") and flags is None:
        return frozenset()
    flags = cpu_flags() if flags is None else flags
    return frozenset(t for feature, types in X86_REPACK.items() if feature in flags for t in types)
