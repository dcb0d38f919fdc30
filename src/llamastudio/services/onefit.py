"""One-model mode's fit check: the flags a model runs with on this machine, from the seeds'
settings (CTX_SIZE, PARALLEL, BATCH_SIZE, UBATCH_SIZE, N_GPU_LAYERS), and whether it then fits
fully — every layer on the GPUs, or, without a GPU, in RAM.

The planner (``fit/planner.py``) chooses what the user left open (placement, context, cache
type); what the user set is kept, and the final flags are estimated again against the same
budgets: a model that does not fit raises :class:`DoesNotFit` with the estimate in its message.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamastudio.config import Settings
from llamastudio.errors import DoesNotFit
from llamastudio.fit.estimator import Estimate, estimate
from llamastudio.fit.flags import GPU_LAYERS_ALL, GPU_LAYERS_AUTO, ServerFlags
from llamastudio.fit.planner import plan
from llamastudio.gguf import GGUFModel, facts_from_model
from llamastudio.hardware import Hardware

MiB = 1 << 20


@dataclass(frozen=True)
class Fit:
    flags: ServerFlags
    estimate: Estimate
    budgets: dict[str, int]  # bytes each device may use (free memory less the planner's margins)
    full: bool  # every layer on the GPUs (or, without a GPU, in RAM)
    n_layer: int  # the model's layers, the output layer included
    reasons: tuple[str, ...]

    def args(self, max_tokens: int | None) -> list[str]:
        """llama-server flags: the plan's, plus ``-n`` (the default ``max_tokens`` of a request)."""
        return self.flags.to_args() + (["-n", str(max_tokens)] if max_tokens else [])

    def summary(self) -> str:
        """Where it goes and what it needs, in one phrase (``in RAM, context 4096 (1 slot(s)):
        needs CPU 412 of 7,890 MiB (usable after margins)``)."""
        need = ", ".join(
            f"{d.name} {d.total / MiB:,.0f} of {max(self.budgets.get(d.name, 0), 0) / MiB:,.0f} MiB"
            for d in self.estimate.devices
            if d.total
        )
        on_gpus = self.estimate.n_gpu_layers
        if not on_gpus:
            where = "in RAM"
        elif self.full:
            where = f"all {self.n_layer} layers on the GPUs"
        else:
            where = f"{on_gpus} of {self.n_layer} layers on the GPUs, the rest in RAM"
        ctx = self.estimate.context
        return f"{where}, context {ctx.n_ctx} ({ctx.n_seq} slot(s)): needs {need} (usable after margins)"


def _gpu_layers(value: str) -> int:
    return {"all": GPU_LAYERS_ALL, "auto": GPU_LAYERS_AUTO}.get(value) or int(value)


def check_fit(model: GGUFModel, hw: Hardware, s: Settings) -> Fit:
    """The flags ``model`` runs with here and whether it fits fully; raises DoesNotFit (with the
    estimate) when it does not fit at all."""
    base = ServerFlags()
    if s.batch_size:
        base = base.with_(batch_size=s.batch_size)
    if s.ubatch_size:
        base = base.with_(ubatch_size=s.ubatch_size)
    facts = facts_from_model(model)
    p = plan(model, hw, ctx=s.ctx_size, parallel=s.parallel, base=base)
    flags, gpus, reasons = p.flags, p.gpus, list(p.reasons)
    # the planner may raise the batch sizes (faster prompts): what the user set is kept
    if s.batch_size:
        flags = flags.with_(batch_size=s.batch_size)
    if s.ubatch_size:
        flags = flags.with_(ubatch_size=s.ubatch_size)
    if s.n_gpu_layers not in (None, "auto"):
        ngl = _gpu_layers(s.n_gpu_layers)
        flags = flags.with_(n_gpu_layers=ngl, n_cpu_moe=0, cpu_moe=False)
        if ngl != 0 and not gpus:
            gpus = hw.gpus
        reasons.append(f"-ngl {s.n_gpu_layers} as asked (N_GPU_LAYERS)")
    est = estimate(model, flags, gpus) if flags != p.flags else p.estimate
    over = [d for d in est.devices if d.total > p.budgets.get(d.name, 0)]
    if over:
        need = ", ".join(
            f"{d.total / MiB:,.0f} MiB on {d.name} where {max(p.budgets.get(d.name, 0), 0) / MiB:,.0f} MiB "
            "are usable"
            for d in over
        )
        name = facts.general.get("name") or facts.architecture
        raise DoesNotFit(f"{name} does not fit with {' '.join(flags.to_args())}: it needs about {need}")
    n_layer = facts.block_count + 1  # llama.cpp counts the output layer as one
    on_gpus = bool(gpus) and est.n_gpu_layers >= n_layer and not flags.n_cpu_moe and not flags.cpu_moe
    full = on_gpus if hw.gpus else True
    return Fit(flags, est, p.budgets, full, n_layer, tuple(reasons))
