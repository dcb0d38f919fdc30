"""Host CPU facts that change llama.cpp's memory accounting: which weights the CPU backend copies
into a ``CPU_REPACK`` buffer.

The rules are ``ggml_repack_get_optimal_repack_type`` in ``ggml/src/ggml-cpu/repack.cpp`` (pinned
llama.cpp b11434). For each weight type it tries, in order, a list of (CPU features, row multiple)
cases; the first case whose features the build has *and* whose ``ne[1]`` (rows) is a multiple of
the case's interleave wins. Where no case matches, the weight stays in the ordinary (mapped)
buffer. Features are what ``ggml_cpu_has_*`` reports: compile-time for the CPU backend that runs,
which for a native build (``GGML_NATIVE``, the studio's source builds) or a release build that
picks its CPU variant at run time is the host's own. The engine's log line
``system_info: … CPU : AVX2 = 1 | …`` states them exactly (``features_from_system_info``).

x86 in this version repacks Q4_0, Q4_K, IQ4_NL and MXFP4 with AVX2 and Q2_K with AVX-512 — never
Q8_0 (only Arm and RISC-V builds repack Q8_0).

Not modelled: the AMX buffer (``AMX_INT8`` builds on Sapphire Rapids and later: Q4_0/Q4_1/Q8_0/
Q4_K/Q5_K/Q6_K/IQ4_XS) and KleidiAI (Arm builds with ``GGML_CPU_KLEIDIAI``); both come before
CPU_REPACK in the CPU's buffer list. ``repack_notes`` says so when the host has AMX.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

# feature names: x86 "avx2", "avx512f"; Arm "neon", "dotprod", "i8mm", "sve", "sve256" (SVE with a
# 256-bit vector: ggml_cpu_get_sve_cnt() == 32); s390x "vxe"; RISC-V "rvv256" (VLEN 256, zvfh)
Case = tuple[tuple[frozenset[str], ...], int]  # (any one of these feature sets, rows multiple)


def _case(rows: int, *alternatives: str) -> Case:
    return tuple(frozenset(a.split("+")) for a in alternatives), rows


REPACK_RULES: dict[str, tuple[Case, ...]] = {
    "Q4_0": (
        _case(8, "avx2", "sve+i8mm+sve256"),
        _case(4, "neon+i8mm"),
        _case(4, "neon+dotprod"),
        _case(4, "vxe"),
        _case(16, "rvv256"),
    ),
    "Q4_K": (_case(8, "avx2"), _case(8, "neon+i8mm"), _case(8, "neon+dotprod"), _case(16, "rvv256")),
    "Q2_K": (_case(8, "avx512f"), _case(16, "rvv256")),
    "Q5_K": (_case(8, "neon+i8mm"), _case(8, "neon+dotprod")),
    "Q6_K": (_case(8, "neon+i8mm"), _case(8, "neon+dotprod")),
    "IQ4_NL": (_case(8, "avx2"), _case(4, "neon+dotprod"), _case(16, "rvv256")),
    "MXFP4": (_case(8, "avx2"), _case(4, "neon+dotprod")),
    "Q8_0": (_case(4, "neon+i8mm"), _case(4, "neon+dotprod"), _case(16, "rvv256")),
    "Q1_0": (_case(4, "neon+i8mm"), _case(4, "neon+dotprod")),
}

# ggml-cpu's system_info names → the feature names above
_SYSTEM_INFO = {
    "AVX2": "avx2",
    "AVX512": "avx512f",
    "NEON": "neon",
    "DOTPROD": "dotprod",
    "MATMUL_INT8": "i8mm",
    "SVE": "sve",
    "VXE": "vxe",
    "RISCV_V": "rvv",
    "AMX_INT8": "amx_int8",
    "KLEIDIAI": "kleidiai",
    "REPACK": "repack",
}
_INFO_ITEM = re.compile(r"([A-Z0-9_]+) = (\w+)")


def repacks(type_name: str, rows: int, features: frozenset[str]) -> bool:
    """Whether a weight of ``type_name`` with ``rows`` = ne[1] goes to CPU_REPACK on a CPU backend
    with ``features`` (the op checks — a 2-D MUL_MAT or 3-D MUL_MAT_ID weight — are the caller's)."""
    for alternatives, multiple in REPACK_RULES.get(type_name, ()):
        if any(alt <= features for alt in alternatives) and rows % multiple == 0:
            return True
    return False


def repack_types(features: frozenset[str] | None = None) -> frozenset[str]:
    """Weight types that some row count repacks with these features (default: this host's)."""
    features = host_features() if features is None else features
    return frozenset(
        t for t, cases in REPACK_RULES.items() if any(any(a <= features for a in alts) for alts, _ in cases)
    )


def features_from_system_info(line: str) -> frozenset[str]:
    """CPU features from llama.cpp's ``system_info`` line (``CPU : SSE3 = 1 | AVX2 = 1 | …``).
    A build without ``REPACK = 1`` (GGML_CPU_REPACK off) repacks nothing: no features."""
    items = dict(_INFO_ITEM.findall(line.split("CPU :", 1)[-1]))
    out = {name for key, name in _SYSTEM_INFO.items() if items.get(key) == "1"}
    if items.get("SVE_CNT") == "32":
        out.add("sve256")
    if items.get("RVV_VLEN") == "256":
        out.add("rvv256")
    if "repack" not in out:
        return frozenset()
    return frozenset(out - {"repack"})


@cache
def cpu_flags() -> frozenset[str]:
    """The kernel's CPU flags (x86 ``flags``, Arm ``Features``) from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@cache
def host_features() -> frozenset[str]:
    """The repack-relevant features of this host, as a native build of llama.cpp would have them."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        flags = cpu_flags()
        return frozenset(f for f in ("avx2", "avx512f", "amx_int8") if f in flags)
    if machine in ("aarch64", "arm64"):
        if sys.platform == "darwin":
            return frozenset(
                {"neon", "dotprod"} | ({"i8mm"} if _darwin_has("hw.optional.arm.FEAT_I8MM") else set())
            )
        flags = cpu_flags()
        out = {"neon"} if "asimd" in flags else set()
        out |= {"dotprod"} if "asimddp" in flags else set()
        out |= {"i8mm"} if "i8mm" in flags else set()
        out |= {"sve"} if "sve" in flags else set()  # the vector length is not in cpuinfo
        return frozenset(out)
    if machine == "s390x":
        return frozenset({"vxe"} if "vxe" in cpu_flags() else set())
    return frozenset()


def _darwin_has(key: str) -> bool:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip() == "1"


def repack_notes(features: frozenset[str]) -> list[str]:
    """What the repack model leaves out on a CPU with these features."""
    notes = []
    if "amx_int8" in features:
        notes.append(
            "this CPU has AMX: an AMX_INT8 build of llama.cpp moves Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K/IQ4_XS "
            "weights into an AMX buffer, which is not modelled"
        )
    if "kleidiai" in features:
        notes.append("KleidiAI buffers (Arm) are not modelled")
    return notes
