"""Scheduler policy with injected effects: no processes (STYLE.md #3)."""

from __future__ import annotations

import asyncio

import pytest

from llamastudio.errors import NotFound, StudioError
from llamastudio.runtime.scheduler import ModelSpec, NoRoom, QueueFull, Scheduler, TooBusy

GiB = 1 << 30


class FakeEffects:
    def __init__(self, load_s: float = 0.05, fail: set[str] | None = None) -> None:
        self.load_s = load_s
        self.fail = fail or set()
        self.log: list[str] = []
        self.running: set[str] = set()

    async def start(self, model: str) -> None:
        self.log.append(f"start {model}")
        await asyncio.sleep(self.load_s)
        if model in self.fail:
            raise StudioError(f"{model}: out of memory")
        self.running.add(model)

    async def stop(self, model: str) -> None:
        self.log.append(f"stop {model}")
        self.running.discard(model)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, gib: int, **kw: object) -> ModelSpec:
    return ModelSpec(name, {"CUDA0": gib * GiB}, **kw)  # type: ignore[arg-type]


async def make(
    models: list[ModelSpec], budget_gib: int = 24, **kw: object
) -> tuple[Scheduler, FakeEffects, Clock]:
    fx, clock = FakeEffects(**kw), Clock()  # type: ignore[arg-type]
    s = Scheduler(fx, {"CUDA0": budget_gib * GiB}, models, clock=clock, wait_for_room=30)
    await s.start()
    return s, fx, clock


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_requests_during_a_load_share_one_start() -> None:
    s, fx, _ = await make([spec("a", 10)])
    leases = await asyncio.gather(*(s.acquire("a") for _ in range(5)))
    assert fx.log == ["start a"] and s.state()["a"]["in_flight"] == 5
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    await settle()
    assert s.state()["a"]["in_flight"] == 0
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
        clock.now += 10
        await settle()
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
    assert fx.running == {"p", "z"} and s.state()["a"]["state"] == "stopped"
    await s.close()


async def test_limits_and_unknown_models() -> None:
    s, _, _ = await make([spec("a", 4, max_concurrency=1), spec("q", 4, max_queue=2)], load_s=0.3)
    lease = await s.acquire("a")
    with pytest.raises(TooBusy):
        await s.acquire("a")
    lease.release()
    first = [asyncio.create_task(s.acquire("q")) for _ in range(2)]
    await settle()
    with pytest.raises(QueueFull):
        await s.acquire("q")
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
