"""The gateway's activity log (``gateway/activity.py``) on its own: each request's figures come
from its own final ``timings`` even when requests overlap; housekeeping paths are not kept; the
log is bounded; every change is published."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from llamastudio.events import EventBus
from llamastudio.gateway import activity
from llamastudio.gateway.metrics import Metrics

TIMINGS = (
    b'data: {"choices":[],"timings":{"cache_n":3,"prompt_n":%d,"prompt_ms":12.5,'
    b'"predicted_n":%d,"predicted_ms":%f,"predicted_per_second":%f}}\n\n'
)


def drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_overlapping_requests_each_get_their_own_timings() -> None:
    bus = EventBus(maxsize=0)
    metrics = Metrics(bus)

    async def request(model: str, prompt_n: int, predicted_n: int, delay: float) -> None:
        entry = metrics.activity.begin(model, "/v1/chat/completions", time.perf_counter())
        metrics.activity.acquired(entry, model)

        async def relay() -> None:  # the relay's task: created by the request, so it sees its entry
            await asyncio.sleep(delay)
            metrics.timings(model, TIMINGS % (prompt_n, predicted_n, 5.0, 40.0))

        await asyncio.ensure_future(relay())
        metrics.activity.end(entry, 200)

    async def both() -> list[dict[str, Any]]:
        queue = bus.subscribe()
        await asyncio.gather(request("a", 10, 7, 0.05), request("b", 20, 9, 0.01))
        return drain(queue)

    events = asyncio.run(both())
    by_model = {r["model"]: r for r in metrics.activity.snapshot()}
    assert (by_model["a"]["tokens_in"], by_model["a"]["tokens_out"]) == (13, 7)
    assert (by_model["b"]["tokens_in"], by_model["b"]["tokens_out"]) == (23, 9)
    for r in by_model.values():
        assert r["cached"] == 3 and r["tokens_per_second"] == 40.0 and r["status"] == 200
        assert r["ttft_ms"] == max(0.0, round(r["duration_ms"] - 5.0, 1))
    assert metrics.tokens == {"a": 7, "b": 9}  # the metrics still count as before
    # begin (waiting), acquired (running), end: three events per request
    assert [e["request"]["status"] for e in events if e["request"]["model"] == "a"] == [None, None, 200]
    assert all(e["type"] == activity.EVENT for e in events)


def test_housekeeping_is_not_kept_and_the_log_is_bounded() -> None:
    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bus = EventBus(maxsize=0)
        queue = bus.subscribe()
        log = activity.Activity(bus)
        quiet = log.begin("m", "/slots", time.perf_counter())
        log.end(quiet, 200)
        assert log.snapshot() == [] and drain(queue) == []
        for i in range(activity.KEEP + 5):
            log.end(log.begin("x" * 1000, "/v1/completions", time.perf_counter()), 200 + i % 2)
        return log.snapshot(), drain(queue)

    rows, events = asyncio.run(run())
    assert len(events) == 2 * (activity.KEEP + 5)  # begin and end of each (none acquired)
    assert len(rows) == activity.KEEP
    assert rows[0]["id"] > rows[-1]["id"]  # newest first
    assert len(rows[0]["model"]) == activity.MAX_NAME  # a made-up name is cut
    assert set(rows[0]) == {
        "id", "model", "path", "started_at", "status", "queued_ms", "duration_ms", "ttft_ms",
        "tokens_in", "cached", "tokens_out", "tokens_per_second",
    }  # fmt: skip


def test_timings_outside_a_request_are_ignored() -> None:
    activity.timings(
        activity.timing_fields(TIMINGS % (1, 1, 1.0, 1.0))
    )  # no current request: nothing to fill, no error
