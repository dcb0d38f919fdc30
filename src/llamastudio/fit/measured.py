"""Measured memory: what llama-server allocated for a load, next to the estimate, and what the
next placement of the same load reserves (issue 17, "learn from every load").

**Key.** A measurement belongs to a *load*, not to a configuration name: the model file's
identity, the engine build, the memory flags and the devices (``loadkey.py``).

**Figures** are bytes per device and category (model, kv, rs, output, compute, mmproj, draft) in
llama.cpp's *logged* sense: host weights are the mapped file range plus repacked weights
(``DeviceUsage.model_logged``). The range can hold weights offloaded to a GPU in between; that gap
is a fact of the file's layout (``mapped_extra``) and is taken off again when reserving.

**Reserving.** A comparable measurement (llama.cpp's ``--fit`` did not change the parameters to
the free memory of that moment) replaces the estimate in the reservation: the measured buffers per
device, and on a GPU at least what the process held there (NVML), whichever is larger. A
configuration's own ``reserve`` always wins.

**Test hook** (read only by the tests' studios, never set it otherwise): the environment variable
``LLAMASTUDIO_TEST_ESTIMATE_SCALE`` multiplies every estimated figure, and so the estimate-based
reservation, to make the closed loop observable (``tests/test_measured_memory.py``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llamastudio.fit.buffers import MiB, parse_log
from llamastudio.fit.loadkey import load_spec, memory_key, model_identity
from llamastudio.fit.usage import DeviceUsage, Estimate
from llamastudio.gguf import GGUFModel

Figures = dict[str, dict[str, int]]  # device → category → bytes
CATEGORIES = ("model", "kv", "rs", "output", "compute", "mmproj", "draft")
DRIFT_LIMIT = 0.05  # |estimate − measured| / measured above this is a drift (logged, counted)
SCALE_ENV = "LLAMASTUDIO_TEST_ESTIMATE_SCALE"
HOST = "CPU"
_OFFLOADED = re.compile(r"load_tensors: offloaded (\d+)/(\d+) layers to GPU")
_FITTED = "cannot meet free memory target"  # common/fit.cpp: --fit changes the parameters
_READY = re.compile(r"\bmodel loaded\b")  # llama-server: after the draft and projector loads
# what the buffer parser (fit/buffers.py) reads, plus --fit's verdict and offloaded layers
_RELEVANT = (
    "buffer size",
    "llama_kv_cache: size",
    "llama_context:",
    "load_tensors:",
    "clip_ctx",
    "load_hparams: model size",
    "loading draft model",
    _FITTED,
)


# -- figures ------------------------------------------------------------------------------------
def estimate_scale() -> float:
    """The test hook's factor (see the module docstring); 1 when unset or not a positive number."""
    try:
        scale = float(os.environ.get(SCALE_ENV, "1"))
    except ValueError:
        return 1.0
    return scale if scale > 0 else 1.0


def _device_figures(d: DeviceUsage, scale: float) -> dict[str, int]:
    logged = d.model if d.model_logged is None else d.model_logged
    values = {"model": logged, **{c: getattr(d, c) for c in CATEGORIES if c != "model"}}
    return {c: round(v * scale) for c, v in values.items() if v}


def estimated_figures(est: Estimate, scale: float = 1.0) -> Figures:
    return {d.name: _device_figures(d, scale) for d in est.devices if d.total}


def totals(figures: Figures) -> dict[str, int]:
    return {dev: sum(cats.values()) for dev, cats in figures.items() if sum(cats.values())}


@dataclass
class Logged:
    """What one load's log says: buffers, llama.cpp's context, and whether ``--fit`` changed it."""

    figures: Figures
    n_ctx: int | None
    offloaded: int | None  # layers on GPUs ("offloaded n/m layers to GPU"); None: not logged
    fitted: bool


def relevant(line: str) -> bool:
    """Whether a log line matters to ``parse_logged`` (the rest is not kept)."""
    return any(s in line for s in _RELEVANT)


def ready_line(line: str) -> bool:
    """The line after which nothing more about memory is logged for this load."""
    return _READY.search(line) is not None


def parse_logged(lines: list[str]) -> Logged | None:
    """The buffers llama-server logged (at ``-lv 4``); None when it logged none."""
    parsed = parse_log("\n".join(lines))
    figures = {
        dev: {cat: round(mib * MiB) for cat, mib in cats.items() if mib}
        for dev, cats in parsed.mib.items()
        if any(cats.values())
    }
    if not figures:
        return None
    offloaded = [int(m.group(1)) for ln in lines if (m := _OFFLOADED.search(ln))]
    return Logged(
        figures=figures,
        n_ctx=parsed.context.get("n_ctx"),
        offloaded=offloaded[-1] if offloaded else None,
        fitted=any(_FITTED in ln for ln in lines),
    )


LOG_ROUNDING = -(-MiB // 200)  # 0.005 MiB, rounded up: what one logged figure may hide


# -- a measurement and what it changes ------------------------------------------------------------
@dataclass
class Measurement:
    """One key's record: the estimate and the engine's buffers of the load that measured them,
    and the most each GPU held for the process over every load (NVML)."""

    key: str
    spec: dict[str, Any]
    model: str  # the configuration that loaded it (last)
    estimated: Figures
    measured: Figures
    mapped_extra: int = 0  # bytes of the logged host range that are not host weights (layout)
    process: dict[str, int] = field(default_factory=dict)  # device → bytes (NVML, peak seen)
    comparable: bool = True
    note: str | None = None
    loads: int = 1
    measured_at: datetime | None = None  # when the buffers were measured
    updated_at: datetime | None = None  # the last load that added to it

    def reserve(self, estimated: dict[str, int]) -> dict[str, int]:
        """Bytes per device the next placement reserves: the measured buffers (the ``estimated``
        reservation where no buffers were measured, only NVML), on a GPU at least what the process
        held there."""
        base: dict[str, int] = dict(estimated)
        if self.measured:
            base = {}
            for dev, cats in self.measured.items():
                extra = min(self.mapped_extra, cats.get("model", 0)) if dev == HOST else 0
                # llama.cpp logs MiB with two decimals: reserve the top of each line's rounding
                base[dev] = sum(cats.values()) - extra + len(cats) * LOG_ROUNDING
        out = {dev: max(base.get(dev, 0), self.process.get(dev, 0)) for dev in set(base) | set(self.process)}
        return {dev: n for dev, n in out.items() if n > 0}

    def drift(self) -> dict[str, float]:
        """Per device: (estimated − measured) / measured, of the same buffers; < 0 under-estimates."""
        est, got = totals(self.estimated), totals(self.measured)
        return {dev: (est.get(dev, 0) - n) / n for dev, n in got.items() if n > 0}

    def drifted(self) -> dict[str, float]:
        return {dev: r for dev, r in self.drift().items() if abs(r) > DRIFT_LIMIT}


@dataclass
class MemoryPlan:
    """The memory side of a launch spec: its key, the estimate, and the measurement if known."""

    key: str
    spec: dict[str, Any]
    estimated: Figures  # scaled by the test hook
    estimated_reserve: dict[str, int]  # what is reserved without a measurement
    mapped_extra: int
    manual: bool  # the configuration reserves its own figure
    n_ctx: int
    n_gpu_layers: int
    measured: Measurement | None = None

    def reserve(self) -> dict[str, int]:
        """Bytes per device of this host (an RPC worker's devices, ``RPC0`` or ``RPC0[host:port]``
        in the log, hold memory on the worker, not in this host's budgets)."""
        m = self.measured
        if self.manual or m is None or not m.comparable:
            out = dict(self.estimated_reserve)
        else:
            out = m.reserve(self.estimated_reserve)
        return {dev: n for dev, n in out.items() if not dev.startswith("RPC")}

    @property
    def source(self) -> str:
        if self.manual:
            return "manual"
        return "measured" if self.measured is not None and self.measured.comparable else "estimate"

    def to_json(self) -> dict[str, Any]:
        m = self.measured
        est = totals(self.estimated)
        got = totals(m.measured) if m else {}
        at = m.measured_at.date().isoformat() if m and m.measured_at else None
        held = m.process if m else {}
        devices = sorted(set(est) | set(got) | set(held), key=lambda d: (d == HOST, d))
        return {
            "key": self.key,
            "source": self.source,
            "estimated": est,
            "measured": got if m and m.measured else None,
            "process": dict(m.process) if m else {},
            "measured_at": m.measured_at.isoformat() if m and m.measured_at else None,
            "loads": m.loads if m else 0,
            "comparable": m.comparable if m else None,
            "note": m.note if m else None,
            "drift": {d: round(r, 4) for d, r in m.drift().items()} if m else {},
            "summary": [
                describe(d, est.get(d, 0), got.get(d, 0) if m and m.measured else None, at, held.get(d, 0))
                for d in devices
            ],
        }


def describe(device: str, estimated: int, measured: int | None, on: str | None, held: int = 0) -> str:
    """``CPU: estimated 20.1 MiB, measured 39.6 MiB on 2026-11-23 (-49.2 %)``; ``held``: what the
    process held on a GPU (NVML)."""
    text = f"{device}: estimated {_mib(estimated)}"
    if measured is None:
        text += ", not measured yet"
    else:
        text += f", measured {_mib(measured)}" + (f" on {on}" if on else "")
        if measured:
            text += f" ({(estimated - measured) / measured * 100:+.1f} %)"
    return text + (f"; the process held {_mib(held)} (NVML)" if held else "")


def _mib(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):,.2f} GiB"


def plan_memory(
    model: GGUFModel,
    companions: list[GGUFModel],
    build: str,
    argv: list[str],
    est: Estimate,
    reserve: dict[str, int],
    manual: bool,
) -> MemoryPlan | None:
    """The memory plan of a llama.cpp load (blocking: reads the GGUF headers' bytes once per file
    version); None when a file is not local (nothing to key it by)."""
    model_id = model_identity(model)
    if model_id is None:
        return None
    identities = {model.location: model_id}
    for c in companions:
        cid = model_identity(c)
        if cid is None:
            return None
        identities[c.location] = cid
    devices = [d.name for d in est.devices]
    spec = load_spec(model_id, build, argv[1:], identities, devices)
    scale = estimate_scale()
    return MemoryPlan(
        key=memory_key(spec),
        spec=spec,
        estimated=estimated_figures(est, scale),
        estimated_reserve=dict(reserve) if manual else {d: round(n * scale) for d, n in reserve.items()},
        mapped_extra=sum(max(0, d.model_logged - d.model) for d in est.devices if d.model_logged is not None),
        manual=manual,
        n_ctx=est.context.n_ctx,
        n_gpu_layers=est.n_gpu_layers,
    )


def measure(plan: MemoryPlan, model: str, logged: Logged, now: datetime) -> Measurement:
    """A new measurement of ``plan``'s key from one load's log."""
    notes = []
    if logged.fitted:
        notes.append(
            "llama.cpp's --fit changed the parameters to the free memory of that moment: not used "
            "for placement"
        )
    if logged.n_ctx is not None and logged.n_ctx != plan.n_ctx:
        notes.append(f"llama.cpp's context is {logged.n_ctx} cells, the estimate's {plan.n_ctx}")
    if logged.offloaded is not None and logged.offloaded != plan.n_gpu_layers:
        notes.append(f"llama.cpp offloaded {logged.offloaded} layers, the estimate {plan.n_gpu_layers}")
    return Measurement(
        key=plan.key,
        spec=plan.spec,
        model=model,
        estimated=plan.estimated,
        measured=logged.figures,
        mapped_extra=plan.mapped_extra,
        comparable=not logged.fitted,
        note="; ".join(notes) or None,
        measured_at=now,
        updated_at=now,
    )
