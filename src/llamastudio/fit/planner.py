"""Smart Auto: llama-server flags that fit a model on given hardware, with one reason per choice.

The planner only searches; every memory figure comes from the estimator, and a plan is returned
only if the estimator says it fits every device within its budget (free memory, minus what other
models have reserved, minus a safety margin per device). Order of preference:

1. every layer on the GPUs — on the fewest GPUs that hold it, NVLink-connected ones first;
2. MoE models: the fewest layers' experts on the CPU (``--n-cpu-moe``) before anything else moves;
3. dense partial offload: as many layers on the GPUs as fit (``-ngl``);
4. CPU only.

Within a placement the context grows to the goal's target; a q8_0 KV cache is chosen only when it
buys context that the f16 cache cannot reach (and needs flash attention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from llamastudio.errors import DoesNotFit
from llamastudio.fit.companions import Companions
from llamastudio.fit.estimator import HOST, Estimate, estimate, pad
from llamastudio.fit.flags import GPU_LAYERS_ALL, ServerFlags
from llamastudio.gguf import GGUFModel, ModelFacts, facts_from_model
from llamastudio.hardware import Gpu, Hardware
from llamastudio.hardware.topology import nvlink_groups

Goal = Literal["max-context", "max-speed", "balanced"]
MiB = 1 << 20
GPU_MARGIN = 1024 * MiB  # like llama.cpp's --fit-target: CUDA context, pools, fragmentation
HOST_MARGIN = 2048 * MiB
MIN_CTX = 4096
TARGET_CTX: dict[str, int] = {"balanced": 32768, "max-speed": 8192}


@dataclass
class Plan:
    flags: ServerFlags
    estimate: Estimate
    reasons: list[str]
    budgets: dict[str, int]  # bytes each device may use
    gpus: tuple[Gpu, ...]  # the GPUs the plan uses
    model_location: str = ""
    warnings: list[str] = field(default_factory=list)

    def command(self, binary: str = "llama-server") -> list[str]:
        return [binary, "-m", self.model_location, *self.flags.to_args()]

    def to_json(self) -> dict[str, Any]:
        return {
            "args": self.flags.to_args(),
            "command": self.command(),
            "reasons": self.reasons,
            "warnings": self.warnings,
            "budgets": self.budgets,
            "estimate": self.estimate.to_json(),
        }


@dataclass
class _Search:
    model: GGUFModel
    facts: ModelFacts
    budgets: dict[str, int]
    base: ServerFlags
    companions: Companions | None = None

    def fits(self, flags: ServerFlags, gpus: tuple[Gpu, ...]) -> Estimate | None:
        est = estimate(self.model, flags, gpus, self.facts, companions=self.companions)
        for d in est.devices:
            if d.total > self.budgets.get(d.name, 0):
                return None
        return est

    def best_ctx(
        self, flags: ServerFlags, gpus: tuple[Gpu, ...], lo: int, hi: int
    ) -> tuple[int, Estimate] | None:
        """Largest context in [lo, hi] (multiples of 256) that fits; None if lo does not."""
        first = self.fits(flags.with_(ctx_size=lo), gpus)
        if first is None:
            return None
        best = (lo, first)
        top = self.fits(flags.with_(ctx_size=hi), gpus)
        if top is not None:
            return hi, top
        a, b = lo // 256, hi // 256  # invariant: a fits, b does not
        while b - a > 1:
            mid = (a + b) // 2
            est = self.fits(flags.with_(ctx_size=mid * 256), gpus)
            if est is not None:
                a, best = mid, (mid * 256, est)
            else:
                b = mid
        return best


def _subsets(gpus: tuple[Gpu, ...], budgets: dict[str, int]) -> list[tuple[Gpu, ...]]:
    """GPU sets to try, smallest first: the roomiest single GPU, NVLink groups, then all of them."""
    if len(gpus) <= 1:
        return [gpus]
    by_room = sorted(gpus, key=lambda g: -budgets[g.device_name])
    out: list[tuple[Gpu, ...]] = [(by_room[0],)]
    groups = [tuple(g for g in gpus if g.index in grp) for grp in nvlink_groups(gpus)]
    for grp in sorted((g for g in groups if 1 < len(g) < len(gpus)), key=len):
        out.append(grp)
    for size in range(2, len(gpus)):
        best = max(combinations(gpus, size), key=lambda c: sum(budgets[g.device_name] for g in c))
        if best not in out:
            out.append(best)
    out.append(gpus)
    return out


def _bsearch_min(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """Smallest k in [lo, hi] with ok(k), for monotone ok; None if ok(hi) is false."""
    if not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def plan(
    model: GGUFModel,
    hw: Hardware,
    goal: Goal = "balanced",
    ctx: int | None = None,
    parallel: int | None = None,
    reserve: dict[str, int] | None = None,
    base: ServerFlags | None = None,
    companions: Companions | None = None,
) -> Plan:
    """Flags for ``model`` on ``hw``; raises DoesNotFit (exit code 3) when nothing fits.
    ``companions``: its projector and draft model, which take memory beside it."""
    facts = facts_from_model(model)
    reserve = reserve or {}
    budgets = {g.device_name: g.free - reserve.get(g.device_name, 0) - GPU_MARGIN for g in hw.gpus}
    budgets[HOST] = hw.ram_free - reserve.get(HOST, 0) - HOST_MARGIN
    reasons: list[str] = []
    ctx_train = facts.context_length or MIN_CTX
    if ctx:
        lo = hi = pad(ctx, 256)
        reasons.append(f"context {hi} as asked")
    else:
        hi = ctx_train if goal == "max-context" else min(ctx_train, TARGET_CTX[goal])
        lo = min(MIN_CTX, hi)
    fa_ok = all(g.flash_attn for g in hw.gpus)
    flags = base or ServerFlags()
    if flags.flash_attn != "auto":  # the user's choice is kept, like every flag they gave
        reasons.append(f"flash attention {flags.flash_attn} as asked")
    else:
        flags = flags.with_(flash_attn="on" if fa_ok else "off")
        reasons.append(
            "flash attention on: every device supports it (smaller compute buffers, quantized KV possible)"
            if fa_ok
            else "flash attention off: a GPU older than compute capability 6.0 lacks the kernels"
        )
    if parallel:
        flags = flags.with_(parallel=parallel)
        reasons.append(f"{parallel} parallel slot(s) as asked")
    search = _Search(model, facts, budgets, flags, companions)
    result = _search_placement(search, hw, goal, lo, hi, reasons)
    if result is None:
        raise DoesNotFit(_no_fit_message(search, hw, lo, facts), needed_ctx=lo)
    chosen, est, gpus = result
    chosen = _tune_batch(search, chosen, gpus, goal, reasons)
    est = search.fits(chosen, gpus) or est
    out = Plan(chosen, est, reasons, budgets, gpus, model.location)
    if est.context.n_ctx_seq < ctx_train and not ctx:
        out.warnings.append(f"context {est.context.n_ctx} is below the model's training context {ctx_train}")
    return out


def _with_cache(
    search: _Search, flags: ServerFlags, gpus: tuple[Gpu, ...], lo: int, hi: int, reasons: list[str]
) -> tuple[ServerFlags, Estimate] | None:
    """Best context with an f16 KV cache, or with q8_0 when that reaches further."""
    f16 = search.best_ctx(flags, gpus, lo, hi)
    if f16 and f16[0] >= hi:
        return flags.with_(ctx_size=f16[0]), f16[1]
    if flags.flash_attn == "on":
        q8_flags = flags.with_(cache_type_k="q8_0", cache_type_v="q8_0")
        q8 = search.best_ctx(q8_flags, gpus, lo, hi)
        if q8 and (f16 is None or q8[0] > f16[0]):
            was = f"{f16[0]}" if f16 else "nothing"
            reasons.append(f"q8_0 KV cache: reaches context {q8[0]} where f16 reaches {was}")
            return q8_flags.with_(ctx_size=q8[0]), q8[1]
    if f16:
        return flags.with_(ctx_size=f16[0]), f16[1]
    return None


def _search_placement(
    search: _Search, hw: Hardware, goal: Goal, lo: int, hi: int, reasons: list[str]
) -> tuple[ServerFlags, Estimate, tuple[Gpu, ...]] | None:
    facts, base = search.facts, search.base
    n_layer = facts.block_count
    fallback: tuple[ServerFlags, Estimate, tuple[Gpu, ...], str] | None = None
    if hw.gpus:
        for gpus in _subsets(hw.gpus, search.budgets):
            flags = _split_flags(base.with_(n_gpu_layers=GPU_LAYERS_ALL), gpus, hw, search.budgets)
            got = _with_cache(search, flags, gpus, lo, hi, reasons)
            extra = search.companions
            if got is None and extra is not None and extra.mmproj is not None and flags.mmproj_offload:
                got = _with_cache(search, flags.with_(mmproj_offload=False), gpus, lo, hi, reasons)
                if got is not None:
                    reasons.append(
                        "the projector on the CPU (--no-mmproj-offload): with it on the GPU not every "
                        "layer fits; images encode slower, text runs at full speed"
                    )
            if got is None:
                continue
            names = ",".join(g.device_name for g in gpus)
            why = f"all {n_layer} layers on {names}"
            if got[0].ctx_size >= hi or goal != "max-context":
                reasons.append(why + ("" if len(gpus) == len(hw.gpus) else " (the fewest GPUs that hold it)"))
                return got[0], got[1], gpus
            if fallback is None or got[0].ctx_size > fallback[0].ctx_size:
                fallback = (*got, gpus, why)
        gpus = hw.gpus
        full = _split_flags(base.with_(n_gpu_layers=GPU_LAYERS_ALL), gpus, hw, search.budgets)
        if facts.expert_count:
            need_ctx = hi if goal == "max-context" else lo

            def moe_fits(k: int) -> bool:
                return search.fits(full.with_(n_cpu_moe=k, ctx_size=need_ctx), gpus) is not None

            k = _bsearch_min(1, n_layer, moe_fits)
            if k is not None:
                got = _with_cache(search, full.with_(n_cpu_moe=k), gpus, lo, hi, reasons)
                if got:
                    reasons.append(
                        f"MoE: experts of the first {k} of {n_layer} layers on the CPU (--n-cpu-moe {k}); "
                        "attention and shared weights stay on the GPU"
                    )
                    return got[0], got[1], gpus

        def partial_fits(moved: int) -> bool:
            return search.fits(full.with_(n_gpu_layers=n_layer - moved, ctx_size=lo), gpus) is not None

        moved = _bsearch_min(0, n_layer, partial_fits)  # fewest layers moved to the CPU
        if moved is not None and n_layer - moved > 0:
            ngl = n_layer - moved
            got = _with_cache(search, full.with_(n_gpu_layers=ngl), gpus, lo, hi, reasons)
            if got:
                reasons.append(f"partial offload: {ngl} of {n_layer + 1} layers on the GPUs (-ngl {ngl})")
                return got[0], got[1], gpus
    if fallback:
        reasons.append(fallback[3])
        return fallback[0], fallback[1], fallback[2]
    cpu = base.with_(n_gpu_layers=0) if hw.gpus else base
    got = _with_cache(search, cpu, (), lo, hi, reasons)
    if got:
        reasons.append("CPU only: " + ("no GPU" if not hw.gpus else "the GPUs cannot hold even one layer"))
        return got[0], got[1], ()
    return None


def _split_flags(
    flags: ServerFlags, gpus: tuple[Gpu, ...], hw: Hardware, budgets: dict[str, int]
) -> ServerFlags:
    """Use only ``gpus`` (``-dev``) and split layers in proportion to each one's budget (``-ts``)."""
    if len(hw.gpus) > 1 and len(gpus) < len(hw.gpus):
        flags = flags.with_(device=tuple(g.device_name for g in gpus))
    if len(gpus) > 1:
        room = [max(budgets[g.device_name], 0) // MiB for g in gpus]
        flags = flags.with_(tensor_split=tuple(float(r) for r in room))
    return flags


def _tune_batch(
    search: _Search, flags: ServerFlags, gpus: tuple[Gpu, ...], goal: Goal, reasons: list[str]
) -> ServerFlags:
    """Bigger micro-batches speed up prompt processing on GPUs, if memory allows."""
    if goal == "max-context" or not gpus:
        reasons.append(f"batch {flags.batch_size} / micro-batch {flags.ubatch_size}: llama-server's defaults")
        return flags
    for ub in (2048, 1024):
        if ub <= flags.ubatch_size:
            break  # never smaller than asked (an embedding model needs its whole input in one)
        bigger = flags.with_(ubatch_size=ub, batch_size=max(flags.batch_size, ub))
        if search.fits(bigger, gpus):
            reasons.append(f"micro-batch {ub}: faster prompt processing, and it still fits")
            return bigger
    reasons.append(f"batch {flags.batch_size} / micro-batch {flags.ubatch_size}: no room for larger batches")
    return flags


def _no_fit_message(search: _Search, hw: Hardware, ctx: int, facts: ModelFacts) -> str:
    cpu = estimate(search.model, search.base.with_(n_gpu_layers=0, ctx_size=ctx), hw.gpus, facts)
    need = cpu.host.total + sum(d.total for d in cpu.devices[:-1])
    have = search.budgets[HOST] + sum(search.budgets[g.device_name] for g in hw.gpus)
    where = f"{len(hw.gpus)} GPU(s) + RAM" if hw.gpus else "RAM"
    return (
        f"{facts.general.get('name', facts.architecture)} does not fit at context {ctx}: it needs about "
        f"{need / MiB:,.0f} MiB and {where} offer {max(have, 0) / MiB:,.0f} MiB "
        "after reservations and margins"
    )
