"""Measured memory: what llama-server allocated for a load, next to the estimate, and what the
next placement of the same load reserves (issue 17, "learn from every load").

**Key.** A measurement belongs to a *load*, not to a configuration name: the sha256 of

- the model's identity: per GGUF part, its size and the sha256 of its header (everything before
  the tensor data). Memory is decided by the header alone (hyperparameters, tensor shapes, types
  and offsets), never by the weights' values: a copy of the file elsewhere, or the same file
  downloaded again, shares the measurement; another quantization does not. The projector
  (``-mm``) and draft model (``-md``) are identified the same way.
- the engine build: the engine's id and its binary's size + mtime (a rebuild changes it).
- the flags: the argv the studio runs, file paths replaced by identities, flags that never change
  memory (``NEUTRAL``: host, port, alias, threads, sampling, templates, logging …) removed. A
  flag not listed stays in the key: a new flag may change memory, so a separate key is safe where
  a shared one would not be.
- the devices the estimate places it on (``CUDA0``, ``CPU`` …).

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

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llamastudio.fit.buffers import MiB, parse_log
from llamastudio.fit.flags import parse_server_args
from llamastudio.fit.usage import DeviceUsage, Estimate
from llamastudio.gguf import GGUFModel
from llamastudio.gguf.model import split_names

Figures = dict[str, dict[str, int]]  # device → category → bytes
CATEGORIES = ("model", "kv", "rs", "output", "compute", "mmproj", "draft")
DRIFT_LIMIT = 0.05  # |estimate − measured| / measured above this is a drift (logged, counted)
SCALE_ENV = "LLAMASTUDIO_TEST_ESTIMATE_SCALE"
HOST = "CPU"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# flags that never change what llama-server allocates: those taking a value, then switches
_NEUTRAL_VALUE = _words(
    "-m --model --host --port -a --alias -t --threads -tb --threads-batch --api-key "
    "--api-key-file --temp --top-k --top-p --min-p --typical --repeat-penalty --repeat-last-n "
    "--presence-penalty --frequency-penalty -s --seed -n --n-predict --predict --chat-template "
    "--chat-template-file --reasoning-format --reasoning-budget -lv --verbosity --log-verbosity "
    "--log-file --log-colors -to --timeout --threads-http --slot-save-path --spec-type "
    "--api-prefix --path --alias-file --slot-prompt-similarity -sps"
)
_NEUTRAL_BOOL = _words(
    "--jinja --no-jinja -v --verbose --log-verbose --log-prefix --no-log-prefix --log-timestamps "
    "--no-log-timestamps --log-disable --metrics --slots --no-slots --props --webui --no-webui "
    "--no-perf --perf --verbose-prompt"
)
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


# -- the key ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _part_identity(path: str, size: int, mtime_ns: int, header_bytes: int) -> str:
    """sha256 of one local part's header (blocking: reads at most the header's bytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = header_bytes
        while left > 0 and (chunk := f.read(min(left, 1 << 20))):
            digest.update(chunk)
            left -= len(chunk)
    return f"{size}:{digest.hexdigest()[:24]}"


def model_identity(model: GGUFModel) -> str | None:
    """The identity of a local GGUF model (all of its parts); None for a remote one."""
    names = split_names(model.location)
    if len(names) != len(model.parts) or any(n.startswith(("http://", "https://")) for n in names):
        return None
    ids = []
    for name, part in zip(names, model.parts, strict=True):
        try:
            st = os.stat(name)
        except OSError:
            return None
        ids.append(_part_identity(name, st.st_size, st.st_mtime_ns, part.data_offset))
    return "+".join(ids)


def engine_build(engine_id: str, binary: Path) -> str:
    """The engine build part of a key: its id and its binary's size + mtime."""
    try:
        st = binary.stat()
    except OSError:
        return f"{engine_id}@missing"
    return f"{engine_id}@{st.st_size}:{st.st_mtime_ns}"


def memory_flags(argv: list[str], identities: dict[str, str]) -> list[str]:
    """The memory-relevant flags of a llama-server argv (without the program), with the files it
    names (model, projector, draft) replaced by their identities; order-independent."""
    kept: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, _ = token.partition("=") if token.startswith("--") else (token, "", "")
        if flag in _NEUTRAL_VALUE:
            i += 1 if eq else 2
            continue
        if flag in _NEUTRAL_BOOL:
            i += 1
            continue
        kept.append(identities.get(token, token))
        i += 1
    flags = parse_server_args(kept)
    flags = flags.with_(
        mmproj=identities.get(flags.mmproj or "", flags.mmproj),
        draft_model=identities.get(flags.draft_model or "", flags.draft_model),
    )
    return flags.to_args()


def memory_key(spec: dict[str, Any]) -> str:
    """The key of a load described by ``spec`` (``load_spec``)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def load_spec(
    model_id: str, build: str, argv: list[str], identities: dict[str, str], devices: list[str]
) -> dict[str, Any]:
    """What a key is made of, readable (stored beside the measurement)."""
    return {"model": model_id, "engine": build, "flags": memory_flags(argv, identities), "devices": devices}


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
                base[dev] = sum(cats.values()) - extra
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
        m = self.measured
        if self.manual or m is None or not m.comparable:
            return dict(self.estimated_reserve)
        return m.reserve(self.estimated_reserve)

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
        devices = sorted(set(est) | set(got), key=lambda d: (d == HOST, d))
        return {
            "key": self.key,
            "source": self.source,
            "estimated": est,
            "measured": got if m else None,
            "process": dict(m.process) if m else {},
            "measured_at": m.measured_at.isoformat() if m and m.measured_at else None,
            "loads": m.loads if m else 0,
            "comparable": m.comparable if m else None,
            "note": m.note if m else None,
            "drift": {d: round(r, 4) for d, r in m.drift().items()} if m else {},
            "summary": [describe(d, est.get(d, 0), got.get(d) if m else None, at) for d in devices],
        }


def describe(device: str, estimated: int, measured: int | None, on: str | None) -> str:
    """``CPU: estimated 20.1 MiB, measured 39.6 MiB on 2026-11-23 (-49.2 %)``."""
    text = f"{device}: estimated {_mib(estimated)}"
    if measured is None:
        return text + ", not measured yet"
    text += f", measured {_mib(measured)}" + (f" on {on}" if on else "")
    if measured:
        text += f" ({(estimated - measured) / measured * 100:+.1f} %)"
    return text


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
