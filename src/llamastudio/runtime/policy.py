"""Scheduling policy: pure functions of plain data (no processes, no clock, no I/O).

The scheduler's owner task describes every model that matters (loaded, loading, stopping, or with
requests queued) as a ``View`` and applies the ``Decision`` that ``decide`` returns. The rules:

**Memory.** A model reserves bytes per device (``CUDA0``, ``CPU`` …, from the estimator) from the
moment it starts loading until its stop has *finished*: a stopping model's memory is still used.
A model is started when its reservation fits next to the others. Otherwise victims are chosen in
this order until it fits: models of its exclusive ``group``; models already stopping (their memory
frees by itself); idle ready models, least recently used first and the smallest first among
equals; then busy ones. Only models holding memory on a device that is short are chosen. Pinned
models are never chosen, and a model with requests in flight, a loading model and a model about
to serve its queued requests are never stopped: they are *blockers* that must drain first. Idle
victims are stopped only once no blocker remains (nothing is evicted for a placement that still
has to wait); the waiting model starts when their stops have finished.

**Groups** (llama-swap's ``groups``, ``group_rule``). ``swap``: the members of a group never run
together (a member's start stops the others). ``exclusive``: a member's start stops every model
outside its group, in a group or not. ``persistent``: a member is never stopped for a model of
another group — neither by ``exclusive`` nor for memory. Pinned models are never stopped by
either rule (a pinned member of a swap group makes its siblings unplaceable while it runs).
Otherwise memory decides, as above.

**CPU threads.** A model whose layers (all or some, MoE experts included) compute on the CPU runs
``-t`` threads (llama.cpp's default: the physical cores) that spin while it works; two such models
working at once on the same cores each run many times slower (issue 18: p50 1.6 s → 29.8 s).
Rule: *serialize the work, not the residency*. A CPU-bound model holds ``min(threads, cores)`` of
the machine's cores while it has requests in flight; a request to it is admitted only while the
threads of every busy CPU-bound model, its own included, fit in the cores, else it queues. Idle
models hold no threads, so nothing is evicted for threads and both models stay loaded (no reload
cost). Models wholly on GPUs (``threads`` = 0) take no part: their one host thread mostly waits
for the device. Splitting the cores (``-t cores/k``) was rejected: it needs a restart whenever
``k`` changes and still leaves each model at 1/k of its speed, while serializing gives each
request the whole machine and each model about half of the time under shared load.

**Fairness.** A model that waits for memory or threads held by busy models is not starved by a
steady stream of requests to them. Once its oldest request has waited ``FAIR_WAIT`` (5 s) and a
blocker has had a turn of ``FAIR_WAIT`` (busy that long without a break), the blocker is
*closed*: new requests to it queue, its requests in flight finish (never interrupted), then the
swap (memory) or the switch (threads) happens. Waiting models are served oldest request first,
so a closed model's own queued requests go next — turns alternate and nobody waits forever. A
request that waits for room is served within ``FAIR_WAIT`` + the longest request in flight in its
way + the stop and load times. A closed model reopens when it has stopped or nobody needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

FAIR_WAIT = 5.0  # seconds; see "Fairness" above
State = Literal["stopped", "starting", "ready", "stopping"]


@dataclass(frozen=True, slots=True)
class View:
    """One model as the policy sees it."""

    name: str
    state: State = "stopped"
    reserve: Mapping[str, int] = field(default_factory=dict)  # bytes per device
    threads: int = 0  # CPU threads it computes with; 0 = wholly on GPUs (or unknown)
    in_flight: int = 0
    last_used: float = 0.0
    busy_since: float | None = None  # requests in flight without a break since then
    waiting_since: float | None = None  # arrival of its oldest queued request; None = none queued
    pinned: bool = False
    group: str | None = None  # its group (llama-swap ``groups``); rules below, see "Groups"
    swap: bool = True  # members of its group never run together
    exclusive: bool = False  # its start stops the models of other groups (and of none)
    persistent: bool = False  # never stopped for a model of another group
    draining: bool = False  # a stop is pending (user's stop, configuration removed): admits nothing
    closed: bool = False  # admits nothing new for now (fairness): requests queue
    ttl: float = 0.0  # idle seconds before unloading; 0 = never


@dataclass(frozen=True, slots=True)
class Plan:
    """How to make room for one stopped model."""

    start: bool = False  # it fits now
    evict: tuple[str, ...] = ()  # idle models to stop (then it fits once they have stopped)
    blockers: tuple[str, ...] = ()  # busy or loading models that must drain first
    pending: tuple[str, ...] = ()  # already stopping: wait for them
    possible: bool = True  # False: even stopping every model that may go leaves no room
    never: str | None = None  # it can never fit these devices: fail its requests


@dataclass(frozen=True, slots=True)
class Decision:
    admit: tuple[str, ...] = ()  # ready models whose queued requests get leases now
    start: tuple[str, ...] = ()
    evict: tuple[str, ...] = ()  # stop to make room
    stop: tuple[str, ...] = ()  # stop: drained for a pending unload
    close: frozenset[str] = frozenset()  # the set of closed models from now on
    fail: tuple[tuple[str, str], ...] = ()  # (model, reason): its queued requests fail
    wake_at: float | None = None  # decide again then (a fairness turn ends), even if nothing happens


def _held(v: View) -> bool:
    return v.state != "stopped"


def _idle(v: View) -> bool:
    """Ready, nothing in flight, and no queued requests it is about to serve."""
    return v.state == "ready" and v.in_flight == 0 and (v.waiting_since is None or v.closed or v.draining)


def group_rule(target: View, v: View) -> Literal["swap", "exclusive"] | None:
    """Why starting ``target`` stops ``v`` whatever memory says (llama-swap's groups): ``swap``,
    one model of a group at a time; ``exclusive``, a member's start stops every model outside
    its group — grouped or not — except members of ``persistent`` groups."""
    if target.group is None:
        return None
    if v.group == target.group:
        return "swap" if target.swap else None
    return "exclusive" if target.exclusive and not v.persistent else None


def shielded(target: View, v: View) -> bool:
    """A member of a persistent group is never stopped for a model of another group."""
    return v.persistent and v.group != target.group


def place(target: View, others: Iterable[View], budgets: Mapping[str, int]) -> Plan:
    """What must go for ``target`` (stopped) to fit next to ``others``."""
    for dev, n in target.reserve.items():
        if n > budgets.get(dev, 0):
            return Plan(possible=False, never=f"{target.name} needs more memory than the devices have")
    rest = [v for v in others if v.name != target.name and _held(v)]
    used: dict[str, int] = {}
    for v in rest:
        for dev, n in v.reserve.items():
            used[dev] = used.get(dev, 0) + n

    def short() -> set[str]:
        return {dev for dev, n in target.reserve.items() if used.get(dev, 0) + n > budgets.get(dev, 0)}

    def free(v: View) -> None:
        for dev, n in v.reserve.items():
            used[dev] = used.get(dev, 0) - n

    chosen: list[View] = []
    for v in rest:  # the group's rules first, whatever the others hold
        rule = group_rule(target, v)
        if rule == "swap" and v.pinned:
            return Plan(possible=False)
        if rule is not None and not v.pinned:
            chosen.append(v)
            free(v)
    by_age = sorted(
        (v for v in rest if v not in chosen and not v.pinned and not shielded(target, v)),
        key=lambda v: (v.last_used, sum(v.reserve.values()), v.name),
    )
    order = (
        [v for v in by_age if v.state == "stopping"]
        + [v for v in by_age if _idle(v)]
        + [v for v in by_age if v.state in ("ready", "starting") and not _idle(v)]
    )
    for v in order:
        need = short()
        if not need:
            break
        if any(v.reserve.get(dev, 0) > 0 for dev in need):
            chosen.append(v)
            free(v)
    if short():
        return Plan(possible=False)
    if not chosen:
        return Plan(start=True)
    return Plan(
        evict=tuple(v.name for v in chosen if _idle(v)),
        blockers=tuple(v.name for v in chosen if v.state in ("ready", "starting") and not _idle(v)),
        pending=tuple(v.name for v in chosen if v.state == "stopping"),
    )


def thread_blockers(target: View, others: Iterable[View], cores: int) -> tuple[str, ...]:
    """Busy CPU-bound models whose threads must free for ``target`` to compute; () = it may."""
    if cores <= 0 or target.threads <= 0 or target.in_flight > 0:
        return ()  # not gated, not CPU-bound, or already holding its threads

    def need(v: View) -> int:
        return min(v.threads, cores)

    busy = sorted(
        (v for v in others if v.name != target.name and v.threads > 0 and v.in_flight > 0),
        key=lambda v: (v.busy_since or 0.0, v.name),
    )
    held = sum(need(v) for v in busy)
    out: list[str] = []
    for v in busy:
        if held + need(target) <= cores:
            break
        out.append(v.name)
        held -= need(v)
    return tuple(out)


def decide(
    views: Iterable[View],
    budgets: Mapping[str, int],
    cores: int,
    now: float,
    fair_wait: float = FAIR_WAIT,
) -> Decision:
    """One reconciliation step: what to stop, start, admit and close now."""
    sim = {v.name: v for v in views}  # updated as decisions are taken, so later ones see them
    stop: list[str] = []
    for v in list(sim.values()):
        if v.draining and v.state == "ready" and v.in_flight == 0:
            stop.append(v.name)
            sim[v.name] = replace(v, state="stopping")
    waiting = sorted(
        (v for v in sim.values() if v.waiting_since is not None and not v.draining),
        key=lambda v: (v.waiting_since, v.name),
    )

    # 1. who stands in whose way, and which of them must close their doors (fairness)
    close: set[str] = set()
    keep: set[str] = set()  # closed models still needed by a waiter stay closed
    wake_at: float | None = None
    for w in waiting:
        blockers: tuple[str, ...]
        idle: tuple[str, ...]
        if w.state == "ready" and not w.closed:
            blockers, idle = thread_blockers(w, sim.values(), cores), ()
        elif w.state == "stopped":
            plan = place(w, sim.values(), budgets)
            blockers, idle = plan.blockers, plan.evict
        else:
            continue
        assert w.waiting_since is not None
        keep.update(name for name in blockers + idle if sim[name].closed)
        for name in blockers:
            b = sim[name]
            if b.closed or b.state != "ready" or b.busy_since is None:
                continue  # loading, or about to serve its queued requests: its turn comes first
            at = max(w.waiting_since, b.busy_since) + fair_wait
            if at <= now:
                close.add(name)
            else:
                wake_at = at if wake_at is None else min(wake_at, at)
    close |= keep
    for name, view in sim.items():
        if view.closed != (name in close):
            sim[name] = replace(view, closed=name in close)

    # 2. serve waiting models, oldest request first
    admit: list[str] = []
    start: list[str] = []
    evict: list[str] = []
    fail: list[tuple[str, str]] = []
    for w0 in waiting:
        w = sim[w0.name]
        if w.state == "ready":
            if w.closed or thread_blockers(w, sim.values(), cores):
                continue
            admit.append(w.name)
            sim[w.name] = replace(w, in_flight=w.in_flight + 1, busy_since=w.busy_since or now)
        elif w.state == "stopped":
            plan = place(w, sim.values(), budgets)
            if plan.never is not None:
                fail.append((w.name, plan.never))
                sim[w.name] = replace(w, waiting_since=None)
            elif plan.start:
                start.append(w.name)
                sim[w.name] = replace(w, state="starting")
            elif plan.evict and not plan.blockers:
                evict.extend(plan.evict)
                for name in plan.evict:
                    sim[name] = replace(sim[name], state="stopping")
    return Decision(
        admit=tuple(admit),
        start=tuple(start),
        evict=tuple(evict),
        stop=tuple(stop),
        close=frozenset(close),
        fail=tuple(fail),
        wake_at=wake_at,
    )


def expired(views: Iterable[View], now: float) -> tuple[str, ...]:
    """Idle models past their TTL (never pinned ones, never with requests queued)."""
    return tuple(
        v.name
        for v in views
        if v.state == "ready"
        and v.in_flight == 0
        and v.waiting_since is None
        and not v.pinned
        and v.ttl > 0
        and now - v.last_used >= v.ttl
    )
