"""The scheduler's owner task with injected effects and clock: no processes (STYLE.md #3).

The fake effects finish at once unless a test holds a model's start or stop on an ``asyncio.Event``;
``settle()`` lets every ready task run (it yields, it does not sleep). Fairness waits are crossed by
moving the injected clock, never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from llamastudio.errors import NoRoom, NotFound, QueueFull, StudioError, TooBusy
from llamastudio.runtime import policy
from llamastudio.runtime.entries import Entry, Waiter, admits_at_once
from llamastudio.runtime.messages import Tick
from llamastudio.runtime.policy import FAIR_WAIT
from llamastudio.runtime.scheduler import Lease, ModelSpec, Scheduler

GiB = 1 << 30


class FakeEffects:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.log: list[str] = []
        self.running: set[str] = set()
        self.hold_start: dict[str, asyncio.Event] = {}  # a start waits for its event
        self.hold_stop: dict[str, asyncio.Event] = {}  # a stop waits (an engine ignoring SIGTERM)

    async def start(self, model: str) -> None:
        self.log.append(f"start {model}")
        if model in self.hold_start:
            await self.hold_start[model].wait()
        if model in self.fail:
            raise StudioError(f"{model}: out of memory")
        self.running.add(model)

    async def stop(self, model: str) -> None:
        self.log.append(f"stop {model}")
        if model in self.hold_stop:
            await self.hold_stop[model].wait()
        self.running.discard(model)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, gib: int, **kw: object) -> ModelSpec:
    return ModelSpec(name, {"CUDA0": gib * GiB}, **kw)  # type: ignore[arg-type]


def cpu_spec(name: str, threads: int = 2, **kw: object) -> ModelSpec:
    return ModelSpec(name, {"CPU": GiB}, threads=threads, **kw)  # type: ignore[arg-type]


async def make(
    models: list[ModelSpec], budget_gib: int = 24, cores: int = 0, **kw: object
) -> tuple[Scheduler, FakeEffects, Clock]:
    fx, clock = FakeEffects(**kw), Clock()  # type: ignore[arg-type]
    budgets = {"CUDA0": budget_gib * GiB, "CPU": 64 * GiB}
    s = Scheduler(fx, budgets, models, clock=clock, wait_for_room=30, cores=cores)
    await s.start()
    return s, fx, clock


async def settle() -> None:
    """Let the owner and the effects run until nothing is ready to run (no wall-clock wait)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_requests_during_a_load_share_one_start() -> None:
    s, fx, _ = await make([spec("a", 10)])
    leases = await asyncio.gather(*(s.acquire("a") for _ in range(5)))
    assert fx.log == ["start a"] and s.snapshot()["a"].in_flight == 5
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    await settle()
    assert s.snapshot()["a"].in_flight == 0
    await s.close()


async def test_eviction_by_memory_never_kills_a_request_in_flight() -> None:
    s, fx, _ = await make([spec("a", 16), spec("b", 16)])
    lease_a = await s.acquire("a")  # a long streaming request on a
    waiting = asyncio.create_task(s.acquire("b"))
    await settle()
    assert not waiting.done() and fx.log == ["start a"]  # b waits; a keeps serving
    lease_a.release()  # the stream finishes intact
    lease_b = await asyncio.wait_for(waiting, 2)
    assert fx.log == ["start a", "stop a", "start b"]
    assert s.evictions == 1
    lease_b.release()
    await s.close()


async def test_models_that_fit_together_never_swap() -> None:
    s, fx, _ = await make([spec("a", 10), spec("b", 10)])
    for _ in range(5):
        for name in ("a", "b"):
            (await s.acquire(name)).release()
    assert fx.log == ["start a", "start b"] and s.evictions == 0
    await s.close()


async def test_lru_then_smallest_is_evicted_first() -> None:
    s, fx, clock = await make([spec("a", 8), spec("b", 8), spec("c", 8), spec("d", 8)])
    for name in ("a", "b", "c"):
        (await s.acquire(name)).release()
        await settle()
        clock.now += 10
    (await s.acquire("d")).release()
    assert fx.log[-2:] == ["stop a", "start d"]  # a was least recently used
    await s.close()


async def test_pinned_is_never_evicted_and_waiting_is_bounded() -> None:
    s, fx, clock = await make([spec("a", 16, pinned=True), spec("b", 16)])
    (await s.acquire("a")).release()
    waiting = asyncio.create_task(s.acquire("b"))
    await settle()
    clock.now += 31
    s.tick()
    with pytest.raises(NoRoom, match="no room was freed within 30s"):
        await asyncio.wait_for(waiting, 2)
    assert "stop a" not in fx.log
    await s.close()


async def test_idle_ttl_unloads_but_not_pinned() -> None:
    s, fx, clock = await make([spec("a", 4, ttl=60), spec("p", 4, ttl=60, pinned=True), spec("z", 4, ttl=0)])
    for name in ("a", "p", "z"):
        (await s.acquire(name)).release()
    await settle()
    clock.now += 59
    s.tick()
    await settle()
    assert "stop a" not in fx.log
    clock.now += 2
    s.tick()
    await settle()
    assert fx.running == {"p", "z"} and s.snapshot()["a"].state == "stopped" and s.unloads == 1
    await s.close()


async def test_limits_and_unknown_models() -> None:
    s, fx, _ = await make([spec("a", 4, max_concurrency=1), spec("q", 4, max_queue=2)])
    lease = await s.acquire("a")
    with pytest.raises(TooBusy):
        await s.acquire("a")
    lease.release()
    fx.hold_start["q"] = asyncio.Event()
    first = [asyncio.create_task(s.acquire("q")) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull):
        await s.acquire("q")
    fx.hold_start["q"].set()
    for lease in await asyncio.gather(*first):
        lease.release()
    with pytest.raises(NotFound):
        await s.acquire("nope")
    await s.close()


async def test_failed_start_fails_waiters_and_next_request_retries() -> None:
    s, fx, _ = await make([spec("a", 4)], fail={"a"})
    results = await asyncio.gather(s.acquire("a"), s.acquire("a"), return_exceptions=True)
    assert all(isinstance(r, StudioError) and "out of memory" in r.message for r in results)
    fx.fail.clear()
    (await s.acquire("a")).release()
    assert fx.log == ["start a", "start a"]
    await s.close()


async def test_exclusive_group_members_never_run_together() -> None:
    s, fx, _ = await make([spec("a", 2, group="big"), spec("b", 2, group="big"), spec("c", 2)])
    (await s.acquire("a")).release()
    (await s.acquire("c")).release()
    (await s.acquire("b")).release()
    assert fx.log == ["start a", "start c", "stop a", "start b"]
    assert fx.running == {"b", "c"}
    await s.close()


async def test_too_big_for_the_devices_fails_at_once() -> None:
    s, fx, _ = await make([spec("huge", 100)])
    with pytest.raises(NoRoom, match="more memory than the devices have"):
        await s.acquire("huge")
    assert fx.log == []
    await s.close()


# -- issue 18 #7: stops never block the owner ------------------------------------------------------
async def test_a_slow_stop_does_not_delay_a_neighbour() -> None:
    """Issue 18 #7: an engine ignoring SIGTERM held the owner for its grace period (a neighbour's
    request took 9.6 s). Its stop now runs beside the owner; its memory stays counted until done."""
    s, fx, _ = await make([spec("slow", 16), spec("n", 4), spec("big", 16)])
    (await s.acquire("slow")).release()
    (await s.acquire("n")).release()
    fx.hold_stop["slow"] = asyncio.Event()  # its stop takes "10 s": until the test lets it go
    unloading = asyncio.create_task(s.unload("slow"))
    await settle()
    assert s.snapshot()["slow"].state == "stopping" and not unloading.done()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    lease = await asyncio.wait_for(s.acquire("n"), 0.1)
    assert loop.time() - t0 < 0.1
    lease.release()

    big = asyncio.create_task(s.acquire("big"))  # needs the memory "slow" still holds
    await settle()
    assert not big.done() and "start big" not in fx.log
    fx.hold_stop["slow"].set()
    (await asyncio.wait_for(big, 2)).release()
    await asyncio.wait_for(unloading, 2)
    assert fx.log[-2:] == ["stop slow", "start big"]
    await s.close()


async def test_a_model_started_while_its_stop_is_pending_waits_for_it() -> None:
    s, fx, _ = await make([spec("a", 4)])
    (await s.acquire("a")).release()
    fx.hold_stop["a"] = asyncio.Event()
    unloading = asyncio.create_task(s.unload("a"))
    again = asyncio.create_task(s.acquire("a"))
    await settle()
    assert fx.log == ["start a", "stop a"] and not again.done()  # no second process beside the first
    fx.hold_stop["a"].set()
    (await asyncio.wait_for(again, 2)).release()
    await asyncio.wait_for(unloading, 2)
    assert fx.log == ["start a", "stop a", "start a"]
    await s.close()


# -- issue 18 #6: fairness --------------------------------------------------------------------------
async def hammer(
    s: Scheduler, model: str, other: str, clock: Clock, at_step: int, steps: int = 40
) -> tuple[asyncio.Task[Lease], list[asyncio.Task[Lease]]]:
    """Requests to ``model`` that always overlap (each arrives before the oldest one finishes),
    while one request for ``other`` waits. At ``at_step`` the clock moves FAIR_WAIT on. Returns
    the request for ``other`` and the requests to ``model`` still queued."""
    held = [await s.acquire(model)]
    waiting = asyncio.create_task(s.acquire(other))
    queued: list[asyncio.Task[Lease]] = []
    for step in range(steps):
        nxt = asyncio.create_task(s.acquire(model))
        await settle()
        if step == at_step:
            clock.now += FAIR_WAIT
            s.tick()
            await settle()
        if nxt.done():
            held.append(nxt.result())
        else:
            queued.append(nxt)
        if held:
            held.pop(0).release()  # the oldest request in flight finishes
        await settle()
        if waiting.done():
            break
    for lease in held:
        lease.release()
    return waiting, queued


async def test_starvation_a_waiting_model_gets_its_turn_within_the_fair_wait() -> None:
    """Issue 18 #6: with room for one model, while requests for the loaded one kept arriving, a
    request for the other waited the whole test window. Now: within FAIR_WAIT of clock time."""
    s, fx, clock = await make([spec("a", 16), spec("b", 16)])
    b, queued_a = await hammer(s, "a", "b", clock, at_step=10)
    assert b.done(), "b starved"
    lease_b = b.result()
    assert s.snapshot()["a"].state == "stopped" and s.snapshot()["b"].in_flight == 1
    assert queued_a and not any(t.done() for t in queued_a)  # a's new requests queued, not failed
    lease_b.release()
    for lease in await asyncio.wait_for(asyncio.gather(*queued_a), 2):  # a's turn comes back
        lease.release()
    assert fx.log == ["start a", "stop a", "start b", "stop b", "start a"]
    await s.close()


async def test_before_the_fair_wait_the_busy_model_keeps_serving() -> None:
    """The bound is a bound, not a swap on every request: before FAIR_WAIT nothing is stopped."""
    s, fx, clock = await make([spec("a", 16), spec("b", 16)])
    b, queued_a = await hammer(s, "a", "b", clock, at_step=-1, steps=20)  # the clock never moves
    assert not b.done() and not queued_a and fx.log == ["start a"]
    b.cancel()
    await s.close()


# -- issue 18 #8: CPU threads -----------------------------------------------------------------------
async def test_two_cpu_models_compute_one_at_a_time_and_both_stay_loaded() -> None:
    """Issue 18 #8: two CPU models placed together each spun on all cores (p50 1.6 s → 29.8 s).
    Rule: a CPU-bound model computes only while the busy ones' threads fit in the cores."""
    s, fx, _ = await make([cpu_spec("x"), cpu_spec("y"), spec("gpu", 4)], cores=2)
    (await s.acquire("y")).release()  # load both
    lease_x = await s.acquire("x")
    y = asyncio.create_task(s.acquire("y"))
    await settle()
    assert not y.done() and s.snapshot()["y"].queued == 1
    (await asyncio.wait_for(s.acquire("gpu"), 0.1)).release()  # a GPU-only model is not held back
    lease_x.release()
    (await asyncio.wait_for(y, 2)).release()
    assert fx.log == ["start y", "start x", "start gpu"] and s.evictions == 0  # nobody was evicted
    await s.close()


async def test_a_users_start_loads_without_waiting_for_cpu_threads() -> None:
    """Starting a model (POST …/start) needs memory, not the cores: it must not wait for another
    CPU model's requests (nor close it for fairness)."""
    s, fx, _ = await make([cpu_spec("x"), cpu_spec("y")], cores=2)
    lease_x = await s.acquire("x")
    await asyncio.wait_for(s.load("y"), 0.1)
    assert fx.log == ["start x", "start y"] and s.snapshot()["y"].in_flight == 0
    assert not s.snapshot()["x"].closed
    lease_x.release()
    await s.close()


async def test_cpu_models_that_fit_in_the_cores_compute_together() -> None:
    s, _, _ = await make([cpu_spec("x", 1), cpu_spec("y", 1)], cores=2)
    lease_x = await s.acquire("x")
    (await asyncio.wait_for(s.acquire("y"), 0.1)).release()
    lease_x.release()
    await s.close()


async def test_cpu_fairness_a_hammered_cpu_model_lets_the_other_compute() -> None:
    s, fx, clock = await make([cpu_spec("x"), cpu_spec("y")], cores=2)
    (await s.acquire("y")).release()
    y, queued_x = await hammer(s, "x", "y", clock, at_step=10)
    assert y.done(), "y starved"
    assert queued_x and not any(t.done() for t in queued_x)
    y.result().release()
    for lease in await asyncio.wait_for(asyncio.gather(*queued_x), 2):
        lease.release()
    assert fx.log == ["start y", "start x"]  # switched turns, never reloaded
    await s.close()


# -- leases are acknowledged --------------------------------------------------------------------------
async def test_a_caller_cancelled_while_waiting_leaves_nothing_behind() -> None:
    s, fx, _ = await make([spec("a", 4)])
    fx.hold_start["a"] = asyncio.Event()
    waiting = asyncio.create_task(s.acquire("a"))
    await settle()
    assert s.snapshot()["a"].queued == 1
    waiting.cancel()
    await settle()
    assert s.snapshot()["a"].queued == 0
    fx.hold_start["a"].set()
    await settle()
    assert (s.snapshot()["a"].state, s.snapshot()["a"].in_flight) == ("ready", 0)
    await s.close()


async def test_a_ready_model_is_acquired_and_released_without_a_task_switch() -> None:
    """With nothing queued, the caller's own step handles its message (the relay's hot path: two
    task switches less per request); the owner's state is the same as if it had."""
    s, _, _ = await make([spec("a", 4)])
    (await s.acquire("a")).release()  # started and ready
    coro = s.acquire("a")
    with pytest.raises(StopIteration) as granted:
        coro.send(None)  # one step: never suspended
    lease = granted.value.value
    assert isinstance(lease, Lease) and s.snapshot()["a"].in_flight == 1
    lease.release()
    assert s.snapshot()["a"].in_flight == 0 and s.events.empty()
    await s.close()


async def test_a_lease_granted_as_its_caller_is_cancelled_is_given_back() -> None:
    """The race the acknowledgement closes: the owner grants the lease, then the caller's task is
    cancelled before it resumes; without acknowledging, in_flight stayed at 1 for ever."""
    s, _, _ = await make([spec("a", 4)])
    (await s.acquire("a")).release()
    caller = asyncio.create_task(s.acquire("a"))
    s.events.put_nowait(Tick())  # queued before the caller runs: its acquire is queued behind it,
    # then granted by the owner (not inline, where it would never wait)
    while s.snapshot()["a"].in_flight == 0:
        await asyncio.sleep(0)
    assert not caller.done()  # granted, not yet resumed: the race is on
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    await settle()
    assert s.snapshot()["a"].in_flight == 0
    await s.close()


# -- issue 18 #10: a model that is no longer configured does not keep its engine ------------------
async def test_a_removed_model_is_drained_stopped_and_forgotten() -> None:
    s, fx, _ = await make([spec("a", 4), spec("b", 4)])
    lease = await s.acquire("a")
    s.configure([spec("b", 4)])  # a's configuration (or its file) is gone
    with pytest.raises(NotFound):
        await s.acquire("a")
    await settle()
    assert "stop a" not in fx.log  # its request in flight finishes first
    lease.release()
    await settle()
    assert fx.log == ["start a", "stop a"] and "a" not in s.snapshot() and fx.running == set()
    await s.close()


async def test_unload_waits_for_requests_in_flight() -> None:
    s, fx, _ = await make([spec("a", 4)])
    lease = await s.acquire("a")
    unloading = asyncio.create_task(s.unload("a"))
    await settle()
    assert not unloading.done() and "stop a" not in fx.log
    lease.release()
    await asyncio.wait_for(unloading, 2)
    assert fx.log == ["start a", "stop a"] and s.snapshot()["a"].state == "stopped"
    await s.close()


def test_admitting_at_once_is_what_the_policy_would_decide() -> None:
    """The acquire fast path (``entries.admits_at_once``) against the policy itself, over random
    sets of models: wherever it admits without asking, the policy admits that request and
    decides nothing else."""
    rng = random.Random(7)
    loop = asyncio.new_event_loop()
    checked = 0
    try:
        for _ in range(3000):
            entries = []
            for i in range(rng.randint(1, 4)):
                e = Entry(cpu_spec(f"m{i}", threads=rng.choice([0, 2, 4])))
                e.state = rng.choice(["ready", "ready", "stopped", "starting", "stopping"])
                e.in_flight = rng.choice([0, 0, 1, 3]) if e.state == "ready" else 0
                e.busy_since = 1.0 if e.in_flight else None
                e.closed = e.state == "ready" and rng.random() < 0.1
                if rng.random() < 0.1:
                    e.waiters.append(Waiter(loop.create_future(), 2.0))
                entries.append(e)
            cores = rng.choice([0, 2, 4])
            target = rng.choice(entries)
            if not admits_at_once(target, entries, cores):
                continue
            target.waiters.append(Waiter(loop.create_future(), 5.0))
            d = policy.decide([e.view() for e in entries], {"CPU": 64 * GiB}, cores, now=5.0)
            assert d.admit == (target.spec.name,), d
            assert not (d.start or d.evict or d.stop or d.fail or d.close) and d.wake_at is None, d
            checked += 1
    finally:
        loop.close()
    assert checked > 300
