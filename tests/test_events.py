"""The event bus delivers events published from worker threads (issue 14: ``EventBus.publish``
was called from download and build threads straight into an ``asyncio.Queue``)."""

from __future__ import annotations

import asyncio
import threading

from llamastudio.events import EventBus


async def test_events_from_threads_reach_the_loop_in_order() -> None:
    bus = EventBus()
    q = bus.subscribe()
    loop_thread = threading.get_ident()
    seen_on: list[int] = []
    original = bus._deliver

    def deliver(event: dict[str, object]) -> None:
        seen_on.append(threading.get_ident())
        original(event)

    bus._deliver = deliver  # type: ignore[method-assign]

    def worker() -> None:
        for i in range(200):
            bus.publish({"type": "progress", "n": i})

    t = threading.Thread(target=worker)
    t.start()
    got = [await asyncio.wait_for(q.get(), 5) for _ in range(200)]
    t.join()
    assert [e["n"] for e in got] == list(range(200))
    assert set(seen_on) == {loop_thread}  # every queue write happened on the loop's thread


async def test_publish_on_the_loop_is_immediate_and_a_full_queue_drops() -> None:
    bus = EventBus(maxsize=2)
    q = bus.subscribe()
    for i in range(5):
        bus.publish({"n": i})
    assert q.qsize() == 2 and q.get_nowait() == {"n": 0}


def test_publish_without_subscribers_is_a_no_op() -> None:
    EventBus().publish({"n": 1})
