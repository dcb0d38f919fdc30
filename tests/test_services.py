"""The service façade's snapshots (``services/status.py``: pure functions of the runtime's facts)
and its offline mode (the CLI's path when no studio serves the data directory)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from llamastudio.config import Settings
from llamastudio.hardware.devices import Hardware
from llamastudio.runtime.facts import ModelFacts
from llamastudio.runtime.messages import ModelState
from llamastudio.runtime.process import State
from llamastudio.services import status as views
from llamastudio.services.local import offline_service
from llamastudio.serving.configs import ModelConfig

GiB = 1 << 30
NOW = 1000.0


def _sched(state: str = "stopped", **kw: object) -> ModelState:
    base: dict[str, object] = {
        "name": "m", "state": state, "in_flight": 0, "queued": 0, "last_used": 0.0, "closed": False,
        "threads": 0, "note": None, "pinned": False, "ttl": 600.0, "max_concurrency": 0,
    }  # fmt: skip
    return ModelState(**{**base, **kw})  # type: ignore[arg-type]


def test_a_failed_model_says_failed_with_its_reason_and_no_pid() -> None:
    facts = ModelFacts(
        "m", _sched("stopped"), State.FAILED, pid=41, port=9000, process_reason="exited with code 1: boom"
    )
    st = views.model_status(facts, NOW)
    assert (st.state, st.reason, st.pid, st.port) == ("failed", "exited with code 1: boom", None, None)


def test_a_model_that_cannot_be_prepared_is_unavailable_with_the_reason() -> None:
    st = views.model_status(ModelFacts("m", None, error="--frobnicate: not a flag of this engine"), NOW)
    assert st.state == "unavailable" and st.reason == "--frobnicate: not a flag of this engine"
    assert st.ttl is None and st.in_flight == 0  # unknown to the scheduler


def test_a_restart_after_failures_says_which_attempt_and_why_the_last_failed() -> None:
    facts = ModelFacts(
        "m", _sched("starting"), State.STARTING, pid=7, port=9001, failures=2, failure_reason="OOM"
    )
    st = views.model_status(facts, NOW)
    assert (st.state, st.note, st.reason, st.pid, st.port) == (
        "starting", "restarting (attempt 3)", "OOM", 7, 9001
    )  # fmt: skip


def test_a_ready_model_shows_its_load_its_limits_and_idle_time() -> None:
    sched = _sched("ready", in_flight=2, queued=1, last_used=NOW - 12.34, pinned=True, max_concurrency=4)
    facts = ModelFacts("m", sched, State.READY, pid=7, port=9001, engine="e1", reserve={"CPU": GiB})
    st = views.model_status(facts, NOW)
    # the JSON of /api/running and `ps --json`, keys in this order
    assert list(st.model_dump().items()) == list(
        {
            "name": "m",
            "state": "ready",
            "note": None,
            "reason": None,
            "in_flight": 2,
            "queued": 1,
            "idle_s": 12.3,
            "pid": 7,
            "port": 9001,
            "engine": "e1",
            "memory": {"CPU": GiB},
            "pinned": True,
            "ttl": 600.0,
            "max_concurrency": 4,
        }.items()
    )


def test_a_stopped_model_keeps_why_it_stopped() -> None:
    st = views.model_status(ModelFacts("m", _sched("stopped", note="unloaded after 1s idle (TTL)")), NOW)
    assert st.state == "stopped" and st.note == "unloaded after 1s idle (TTL)" and st.pid is None


def test_running_lists_live_and_failed_models_only() -> None:
    facts = [
        ModelFacts("up", _sched("ready", name="up"), State.READY),
        ModelFacts("down", _sched("stopped", name="down"), State.STOPPED),
        ModelFacts("dead", _sched("stopped", name="dead"), State.FAILED, process_reason="killed"),
        ModelFacts("broken", None, error="no such file"),  # not scheduled: never ran
    ]
    assert [(s.name, s.state) for s in views.running(facts, NOW)] == [("up", "ready"), ("dead", "failed")]


def test_the_gateway_model_entry_has_openais_shape_plus_aliases_and_status() -> None:
    cfg = ModelConfig("m", "org/repo:Q4_K_M", aliases=["gpt"])
    facts = ModelFacts("m", _sched("ready", in_flight=1), State.READY, pid=7, reserve={"CPU": GiB})
    entry = views.gateway_model(views.served_model(cfg, views.model_status(facts, NOW)))
    assert entry.model_dump(mode="json") == {
        "id": "m",
        "object": "model",
        "created": 0,
        "owned_by": "llamastudio",
        "aliases": ["gpt"],
        "status": {
            "state": "ready",
            "reason": None,
            "in_flight": 1,
            "queued": 0,
            "idle_s": None,
            "memory": {"CPU": GiB},
        },
        # not prepared yet: a chat model as far as anyone knows, its template not known
        "capabilities": ["chat", "completion"],
        "chat_template": None,
        "name": None,  # llama-swap's name / description / metadata: null when unset
        "description": None,
        "meta": None,
    }


def test_metrics_count_only_models_the_scheduler_knows() -> None:
    facts = [
        ModelFacts("a", _sched("ready", name="a", in_flight=3, queued=2)),
        ModelFacts("b", _sched("stopped", name="b")),
        ModelFacts("c", None, error="broken"),
    ]
    snap = views.metrics(facts, loads=4, evictions=1, ttl_unloads=2)
    assert snap.in_flight == {"a": 3, "b": 0} and snap.queue_depth == {"a": 2, "b": 0}
    assert snap.loaded == {"a": True, "b": False} and (snap.loads, snap.evictions, snap.ttl_unloads) == (
        4,
        1,
        2,
    )


def test_a_config_view_fits_against_the_budgets_or_carries_the_error() -> None:
    cfg = ModelConfig("m", "x")
    status = views.model_status(ModelFacts("m"), NOW)
    failed = views.config_view(cfg, status, {"CPU": GiB}, "x: no such file")
    assert failed.prepared is None and failed.error == "x: no such file" and not failed.fits
    assert list(failed.model_dump()) == ["config", "status", "error", "budgets", "prepared", "fits"]


async def test_offline_the_cli_stores_previews_and_deletes_without_a_scheduler(tmp_path: Path) -> None:
    """The CLI's path with no studio: the façade over a runtime that never starts; deleting must
    not wait for a scheduler to stop an engine (none runs), and nothing is synced."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    svc = offline_service(settings, Hardware((), 2, 16 * GiB, 12 * GiB))
    cfg = ModelConfig("c", "", command=["srv", "--port", "${PORT}"], reserve={"CPU": GiB})
    saved = await svc.put_config(cfg)
    assert saved.error is None and saved.prepared is not None
    assert saved.prepared.argv == ["srv", "--port", "${PORT}"] and saved.reload_needed is False
    assert saved.status.state == "stopped" and saved.fits
    assert (await svc.get_config("c")).config.command == cfg.command
    assert "c:" in await svc.export_configs("llama-swap")
    await asyncio.wait_for(svc.delete_config("c"), 5)
    assert svc.runtime.known == []  # never synced: the scheduler is not running
