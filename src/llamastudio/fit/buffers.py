"""Parse what llama-server logs about its buffers (``-lv 4``) into bytes per device and category.

Only the lines of the *real* load count: llama-server may dry-run a load first (``--fit``), so the
model lines are taken from the last ``load_tensors`` block and the rest from the last
``llama_context`` construction. Values are logged in MiB with two decimals, so every parsed number
carries ±0.005 MiB of rounding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

MiB = 1024 * 1024
_BUF = re.compile(
    r"(load_tensors|llama_kv_cache|llama_memory_recurrent|llama_context|sched_reserve):\s+"
    r"(\S+)\s+(model|KV|RS|output|compute) buffer size =\s+([\d.]+) MiB"
)
_KV_SIZE = re.compile(
    r"llama_kv_cache: size =\s+[\d.]+ MiB \(\s*(\d+) cells,\s+(\d+) layers,\s+(\d+)/(\d+) seqs\)"
)
_CTX = re.compile(r"llama_context: (n_ctx|n_ctx_seq|n_seq_max|n_batch|n_ubatch)\s+= (\d+)")
_FA = re.compile(r"flash_attn\s+= (\w+)|Flash Attention was auto, set to (\w+)")
_CATEGORY = {"model": "model", "KV": "kv", "RS": "rs", "output": "output", "compute": "compute"}
# the projector (tools/mtmd/clip.cpp): its weights in one line, its compute buffer per backend
_CLIP_BACKEND = re.compile(r"clip_ctx: CLIP using (\S+) backend")
_CLIP_WEIGHTS = re.compile(r"load_hparams: model size:\s+([\d.]+) MiB")
_CLIP_COMPUTE = re.compile(r"reserve_compute_meta:\s+(\S+) compute buffer size =\s+([\d.]+) MiB")
_DRAFT = "loading draft model"  # common_speculative_init_result: the draft's own load follows


def host_device(name: str) -> str:
    """Buffers of host memory (mapped, repacked, pinned) are all "CPU"."""
    return "CPU" if name.startswith("CPU") or name.endswith("_Host") else name


@dataclass
class LoggedBuffers:
    mib: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    lines: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # lines summed per category
    kv_caches: list[tuple[int, int, int, int]] = field(default_factory=list)  # cells, layers, seqs, streams
    context: dict[str, int] = field(default_factory=dict)
    flash_attn: str | None = None

    def total(self, category: str) -> float:
        return sum(dev.get(category, 0.0) for dev in self.mib.values())

    def tolerance(self, category: str) -> float:
        """The rounding a summed value carries: ±0.005 MiB per logged line."""
        return 0.005 * max(1, self.lines[category]) + 1e-9


def parse_log(text: str) -> LoggedBuffers:
    """Buffers per device and category; a projector's as ``mmproj``, a draft model's (all of its
    buffers) as ``draft``."""
    lines = text.splitlines()
    cut = next((i for i, ln in enumerate(lines) if _DRAFT in ln), None)
    out = _parse_model(lines if cut is None else lines[:cut])
    if cut is not None:
        draft = _parse_model(lines[cut:])
        for dev, cats in draft.mib.items():
            out.mib[dev]["draft"] += sum(cats.values())
            out.lines["draft"] += sum(draft.lines.values())
    _parse_projector(lines, out)
    return out


def _parse_projector(lines: list[str], out: LoggedBuffers) -> None:
    backend = "CPU"
    compute: dict[str, float] = {}  # the last reserve per backend counts (FA off re-reserves)
    weights = 0.0
    for line in lines:
        if m := _CLIP_BACKEND.search(line):
            backend = host_device(m.group(1))
        elif m := _CLIP_WEIGHTS.search(line):
            weights = float(m.group(1))
        elif m := _CLIP_COMPUTE.search(line):
            compute[host_device(m.group(1))] = float(m.group(2))
    if weights:
        out.mib[backend]["mmproj"] += weights
        out.lines["mmproj"] += 1
    for dev, value in compute.items():
        out.mib[dev]["mmproj"] += value
        out.lines["mmproj"] += 1


def _parse_model(lines: list[str]) -> LoggedBuffers:
    last_load = max(
        (i for i, ln in enumerate(lines) if "load_tensors: loading model tensors" in ln), default=0
    )
    last_ctx = max(
        (i for i, ln in enumerate(lines) if "llama_context: constructing llama_context" in ln), default=0
    )
    out = LoggedBuffers()
    compute: dict[str, float] = {}  # per raw buffer name: a re-reserved graph replaces the value
    for i, line in enumerate(lines):
        m = _BUF.search(line)
        if m:
            source, dev, cat, value = m.groups()
            if cat == "compute" and i >= last_ctx:
                compute[dev] = float(value)
            elif (source == "load_tensors" and i >= last_load) or (
                source != "load_tensors" and i >= last_ctx
            ):
                out.mib[host_device(dev)][_CATEGORY[cat]] += float(value)
                out.lines[_CATEGORY[cat]] += 1
            continue
        if i < last_ctx:
            continue
        if k := _KV_SIZE.search(line):
            out.kv_caches.append(tuple(int(x) for x in k.groups()))  # type: ignore[arg-type]
        elif c := _CTX.search(line):
            out.context.setdefault(c.group(1), int(c.group(2)))
        elif f := _FA.search(line):
            out.flash_attn = f.group(2) or f.group(1)
    for dev, value in compute.items():
        out.mib[host_device(dev)]["compute"] += value
        out.lines["compute"] += 1
    return out
