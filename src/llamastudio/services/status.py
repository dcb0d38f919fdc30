"""Status snapshots from the runtime's facts: pure functions of plain data (no processes, no
loop), so what a face shows for a model is decided here once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from llamastudio.runtime.facts import ModelFacts
from llamastudio.runtime.process import State
from llamastudio.services.snapshots import (
    ConfigView,
    GatewayModel,
    GatewayModelStatus,
    MetricsSnapshot,
    ModelStatus,
    ModelTraits,
    PreparedView,
    ServedModel,
    StateName,
)
from llamastudio.serving.configs import ModelConfig
from llamastudio.serving.launch import Prepared

_LIVE = ("starting", "ready", "stopping")  # states in which the process has a pid


def model_status(f: ModelFacts, now: float) -> ModelStatus:
    """``now``: the scheduler's clock (``time.monotonic``), for the idle time."""
    sched = f.scheduled
    state: StateName = sched.state if sched else "stopped"
    reason = None
    if f.process == State.FAILED and state == "stopped":
        state, reason = "failed", f.process_reason
    elif f.error is not None:
        state, reason = "unavailable", f.error
    note = sched.note if sched and state in ("stopped", "stopping") else None
    if state == "starting" and f.failures:
        note = f"restarting (attempt {f.failures + 1})"
    return ModelStatus(
        name=f.name,
        state=state,
        note=note,  # unloaded by TTL, evicted for whom, restarting (attempt n)
        reason=reason or (f.failure_reason if f.failures else None),
        in_flight=sched.in_flight if sched else 0,
        queued=sched.queued if sched else 0,
        idle_s=round(now - sched.last_used, 1) if sched and sched.last_used else None,
        pid=f.pid if state in _LIVE else None,
        port=f.port if state in ("starting", "ready") else None,
        engine=f.engine,
        memory=f.reserve,
        pinned=sched.pinned if sched else False,
        ttl=sched.ttl if sched else None,
        max_concurrency=sched.max_concurrency if sched else 0,
    )


def served_model(cfg: ModelConfig, status: ModelStatus, prepared: Prepared | None = None) -> ServedModel:
    traits = ModelTraits(**asdict(prepared.traits)) if prepared is not None else ModelTraits()
    return ServedModel(
        **status.model_dump(),
        model=cfg.model,
        aliases=list(cfg.aliases),
        configured=cfg.configured,
        traits=traits,
        title=cfg.title,
        description=cfg.description,
        metadata=cfg.metadata,
        unlisted=cfg.unlisted,
    )


def capabilities(t: ModelTraits) -> list[str]:
    """The gateway's words for what a model answers (``/v1/models``)."""
    if t.role != "chat":
        return [t.role]
    out = ["chat", "completion"] if t.chat_template is not False else ["completion"]
    return out + [c for c, on in (("vision", t.vision is True), ("tools", t.tools)) if on]


def running(facts: Iterable[ModelFacts], now: float) -> list[ModelStatus]:
    """Models the scheduler runs (or is starting or stopping), and those whose process failed."""
    return [
        model_status(f, now)
        for f in facts
        if f.scheduled is not None and (f.scheduled.state != "stopped" or f.process == State.FAILED)
    ]


def config_view(
    cfg: ModelConfig, status: ModelStatus, budgets: dict[str, int], prepared: Prepared | str
) -> ConfigView:
    """``prepared``: the launch spec, or why there is none (the error's message)."""
    if isinstance(prepared, str):
        return ConfigView(
            config=cfg, status=status, error=prepared, budgets=budgets, prepared=None, fits=False
        )
    return ConfigView(
        config=cfg,
        status=status,
        error=None,
        budgets=budgets,
        prepared=PreparedView.model_validate(prepared.to_json()),
        fits=all(n <= budgets.get(dev, 0) for dev, n in prepared.reserve.items()),
    )


def gateway_model(m: ServedModel) -> GatewayModel:
    status = GatewayModelStatus(
        state=m.state,
        reason=m.reason,
        in_flight=m.in_flight,
        queued=m.queued,
        idle_s=m.idle_s,
        memory=m.memory,
    )
    return GatewayModel(
        id=m.name,
        aliases=m.aliases,
        status=status,
        capabilities=capabilities(m.traits),
        chat_template=m.traits.chat_template,
        name=m.title,
        description=m.description,
        meta={"llamaswap": m.metadata} if m.metadata else None,
    )


def metrics(
    facts: Iterable[ModelFacts],
    loads: int,
    evictions: int,
    ttl_unloads: int,
    drift: dict[str, dict[str, float]] | None = None,
    drifts: dict[str, int] | None = None,
) -> MetricsSnapshot:
    """Per model the scheduler knows: requests in flight, requests queued, loaded or not; per
    measured model, how far the estimate is from the measured memory (``drift``, and ``drifts``:
    measured loads with a drift over 5 %)."""
    known = [(f.name, f.scheduled) for f in facts if f.scheduled is not None]
    return MetricsSnapshot(
        in_flight={n: s.in_flight for n, s in known},
        queue_depth={n: s.queued for n, s in known},
        loaded={n: s.state == "ready" for n, s in known},
        loads=loads,
        evictions=evictions,
        ttl_unloads=ttl_unloads,
        estimate_drift=drift or {},
        estimate_drifts=drifts or {},
    )
