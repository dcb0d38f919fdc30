"""The scheduling policy as a pure function: tables of plain data in, decisions out (STYLE.md #14).

No processes, no tasks, no sleeps: the clock is a number in each row.
"""

from __future__ import annotations

from typing import Any

import pytest

from llamastudio.runtime.policy import FAIR_WAIT, Decision, Plan, View, decide, expired, place

G = 1 << 30
NOW = 1000.0
ROOM_FOR_ONE = {"CUDA0": 10 * G, "CPU": 64 * G}


def v(name: str, state: str = "ready", gib: int = 8, dev: str = "CUDA0", **kw: Any) -> View:
    return View(name, state, {dev: gib * G}, **kw)  # type: ignore[arg-type]


PLACE = [
    # (why, target, others, budgets, expected plan)
    ("fits next to what runs", v("t", "stopped", 4), [v("a", gib=4)], ROOM_FOR_ONE, Plan(start=True)),
    (
        "least recently used idle model goes first",
        v("t", "stopped", 4),
        [v("old", gib=4, last_used=1.0), v("new", gib=4, last_used=2.0)],
        ROOM_FOR_ONE,
        Plan(evict=("old",)),
    ),
    (
        "the smallest goes first among equally old",
        v("t", "stopped", 4),
        [v("big", gib=5, last_used=1.0), v("small", gib=4, last_used=1.0)],
        ROOM_FOR_ONE,
        Plan(evict=("small",)),
    ),
    (
        "a model with requests in flight is never stopped: it blocks",
        v("t", "stopped"),
        [v("busy", in_flight=2, busy_since=NOW)],
        ROOM_FOR_ONE,
        Plan(blockers=("busy",)),
    ),
    (
        "a ready model about to serve its queued requests is not evicted under them",
        v("t", "stopped"),
        [v("queued", waiting_since=NOW)],
        ROOM_FOR_ONE,
        Plan(blockers=("queued",)),
    ),
    (
        "a closed model (drained for fairness) is evicted with its requests still queued",
        v("t", "stopped"),
        [v("closed", waiting_since=NOW, closed=True)],
        ROOM_FOR_ONE,
        Plan(evict=("closed",)),
    ),
    (
        "a stopping model's memory counts until it has stopped",
        v("t", "stopped"),
        [v("going", "stopping")],
        ROOM_FOR_ONE,
        Plan(pending=("going",)),
    ),
    (
        "a loading model is waited for, never stopped mid-load",
        v("t", "stopped"),
        [v("loading", "starting")],
        ROOM_FOR_ONE,
        Plan(blockers=("loading",)),
    ),
    (
        "a pinned model is never chosen",
        v("t", "stopped"),
        [v("pin", pinned=True)],
        ROOM_FOR_ONE,
        Plan(possible=False),
    ),
    (
        "only models holding memory on the short device are chosen",
        v("t", "stopped"),
        [v("other-gpu", dev="CUDA1", last_used=0.0), v("same-gpu", last_used=5.0)],
        {**ROOM_FOR_ONE, "CUDA1": 10 * G},
        Plan(evict=("same-gpu",)),
    ),
    (
        "an exclusive group's member goes even when memory fits",
        v("t", "stopped", 1, group="g"),
        [v("mate", gib=1, group="g")],
        ROOM_FOR_ONE,
        Plan(evict=("mate",)),
    ),
    (
        "bigger than the device: never",
        v("t", "stopped", 11),
        [],
        ROOM_FOR_ONE,
        Plan(possible=False, never="t needs more memory than the devices have"),
    ),
]


@pytest.mark.parametrize(("why", "target", "others", "budgets", "plan"), PLACE, ids=[r[0] for r in PLACE])
def test_place(why: str, target: View, others: list[View], budgets: dict[str, int], plan: Plan) -> None:
    assert place(target, others, budgets) == plan


CPU = {"CPU": 64 * G}
W = NOW - FAIR_WAIT  # a request that has waited exactly the fairness bound


def cpu(name: str, threads: int = 2, state: str = "ready", **kw: Any) -> View:
    return v(name, state, dev="CPU", gib=1, threads=threads, **kw)


DECIDE = [
    # (why — the bug or rule it pins, views, budgets, cores, expected decision)
    (
        "issue 18 #6 starvation: a busy model closes once the waiter has waited FAIR_WAIT",
        [v("a", in_flight=3, busy_since=NOW - 60), v("b", "stopped", waiting_since=W)],
        ROOM_FOR_ONE,
        0,
        Decision(close=frozenset({"a"})),
    ),
    (
        "not before: the owner is told when to look again",
        [v("a", in_flight=3, busy_since=NOW - 60), v("b", "stopped", waiting_since=W + 1)],
        ROOM_FOR_ONE,
        0,
        Decision(wake_at=NOW + 1),
    ),
    (
        "a model that just got its turn keeps it for FAIR_WAIT, however old the waiter",
        [v("a", in_flight=1, busy_since=NOW - 1), v("b", "stopped", waiting_since=NOW - 100)],
        ROOM_FOR_ONE,
        0,
        Decision(wake_at=NOW - 1 + FAIR_WAIT),
    ),
    (
        "a closed model stays closed while it drains",
        [v("a", in_flight=1, busy_since=NOW - 60, closed=True), v("b", "stopped", waiting_since=W)],
        ROOM_FOR_ONE,
        0,
        Decision(close=frozenset({"a"})),
    ),
    (
        "drained: the closed model is evicted, its queued requests wait their turn",
        [v("a", closed=True, waiting_since=NOW - 1), v("b", "stopped", waiting_since=W)],
        ROOM_FOR_ONE,
        0,
        Decision(evict=("a",), close=frozenset({"a"})),
    ),
    (
        "nobody needs it any more: a closed model reopens and serves its queue",
        [v("a", closed=True, waiting_since=NOW - 1)],
        ROOM_FOR_ONE,
        0,
        Decision(admit=("a",)),
    ),
    (
        "oldest waiter first: room for one goes to the model that waited longest",
        [v("a", "stopped", waiting_since=NOW - 1), v("b", "stopped", waiting_since=NOW - 2)],
        ROOM_FOR_ONE,
        0,
        Decision(start=("b",)),
    ),
    (
        "a model that fits beside the others starts without evicting anyone",
        [v("a", gib=4, in_flight=1, busy_since=NOW), v("b", "stopped", 4, waiting_since=NOW)],
        ROOM_FOR_ONE,
        0,
        Decision(start=("b",)),
    ),
    (
        "a model whose stop is pending is not started again until it has stopped",
        [v("a", "stopping", waiting_since=NOW - 9)],
        ROOM_FOR_ONE,
        0,
        Decision(),
    ),
    (
        "a user's stop waits for requests in flight",
        [v("a", in_flight=1, busy_since=NOW, draining=True)],
        ROOM_FOR_ONE,
        0,
        Decision(),
    ),
    (
        "… then stops the drained model",
        [v("a", draining=True)],
        ROOM_FOR_ONE,
        0,
        Decision(stop=("a",)),
    ),
    (
        "too big for the devices: its requests fail at once",
        [v("huge", "stopped", 11, waiting_since=NOW)],
        ROOM_FOR_ONE,
        0,
        Decision(fail=(("huge", "huge needs more memory than the devices have"),)),
    ),
    (
        "issue 18 #8: a CPU model waits while another CPU model computes on the cores",
        [cpu("x", in_flight=1, busy_since=NOW), cpu("y", waiting_since=NOW)],
        CPU,
        2,
        Decision(wake_at=NOW + FAIR_WAIT),
    ),
    (
        "both stay loaded: threads never evict an idle model",
        [cpu("x"), cpu("y", state="stopped", waiting_since=NOW)],
        CPU,
        2,
        Decision(start=("y",)),
    ),
    (
        "an idle CPU model holds no threads",
        [cpu("x"), cpu("y", waiting_since=NOW)],
        CPU,
        2,
        Decision(admit=("y",)),
    ),
    (
        "models that fit in the cores together compute together",
        [cpu("x", 1, in_flight=1, busy_since=NOW), cpu("y", 1, waiting_since=NOW)],
        CPU,
        2,
        Decision(admit=("y",)),
    ),
    (
        "a model asking for more threads than cores still runs (alone)",
        [cpu("x", 16, waiting_since=NOW)],
        CPU,
        2,
        Decision(admit=("x",)),
    ),
    (
        "a GPU-only model (threads 0) is never held back by CPU work",
        [cpu("x", in_flight=1, busy_since=NOW), v("g", threads=0, waiting_since=NOW)],
        {**CPU, **ROOM_FOR_ONE},
        2,
        Decision(admit=("g",)),
    ),
    (
        "CPU fairness: a busy CPU model closes for a waiting one after FAIR_WAIT",
        [cpu("x", in_flight=4, busy_since=NOW - 60), cpu("y", waiting_since=W)],
        CPU,
        2,
        Decision(close=frozenset({"x"})),
    ),
    (
        "… once it drained, the waiter computes and the closed model's queue waits its turn",
        [cpu("x", closed=True, waiting_since=NOW - 1), cpu("y", waiting_since=W)],
        CPU,
        2,
        Decision(admit=("y",)),
    ),
]


@pytest.mark.parametrize(
    ("why", "views", "budgets", "cores", "expected"), DECIDE, ids=[r[0][:60] for r in DECIDE]
)
def test_decide(why: str, views: list[View], budgets: dict[str, int], cores: int, expected: Decision) -> None:
    assert decide(views, budgets, cores, NOW) == expected


def test_fairness_alternates_turns_until_both_queues_are_served() -> None:
    """Replays the starvation scenario step by step through the pure function: room for one, A
    hammered, B waits; B gets its turn within FAIR_WAIT, then A's queued requests get theirs."""
    a = v("a", in_flight=2, busy_since=NOW - 30)
    b = v("b", "stopped", waiting_since=NOW)
    t = NOW + FAIR_WAIT
    assert decide([a, b], ROOM_FOR_ONE, 0, t - 0.1).close == frozenset()
    assert decide([a, b], ROOM_FOR_ONE, 0, t).close == {"a"}
    # a closed: new requests to a queue, its two in flight finish
    a = v("a", closed=True, waiting_since=t + 0.5)
    assert decide([a, b], ROOM_FOR_ONE, 0, t + 1).evict == ("a",)
    a = v("a", "stopped", waiting_since=t + 0.5)
    assert decide([a, b], ROOM_FOR_ONE, 0, t + 2).start == ("b",)
    b = v("b", "ready", waiting_since=NOW)
    assert decide([a, b], ROOM_FOR_ONE, 0, t + 3).admit == ("b",)
    b = v("b", "ready", last_used=t + 4)  # b's request done, nothing else queued for b
    assert decide([a, b], ROOM_FOR_ONE, 0, t + 4).evict == ("b",)  # a's queue is next


def test_ttl_expiry() -> None:
    views = [
        v("idle", last_used=NOW - 61, ttl=60),
        v("recent", last_used=NOW - 59, ttl=60),
        v("pinned", last_used=0, ttl=60, pinned=True),
        v("forever", last_used=0, ttl=0),
        v("busy", last_used=0, ttl=60, in_flight=1),
        v("queued", last_used=0, ttl=60, waiting_since=NOW, closed=True),
    ]
    assert expired(views, NOW) == ("idle",)
