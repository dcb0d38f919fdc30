"""Issue E acceptance: the real ``llamastudio serve`` (API :port + gateway :gateway_port), the rig's
real llama-server, tiny real models, and the real ``openai`` SDK as the client."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model
from tests.rig.pids import alive
from tests.rig.studio import Studio

KEY = "gw-secret"
SMALL = ["-c", "512", "-np", "2", "-t", "2"]
LONG = ["-c", "8192", "-np", "1", "-t", "2"]  # room for streams of thousands of tokens


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path]) -> Iterator[Studio]:
    with Studio(tmp_path_factory.mktemp("studio"), rig_bin("llama-server"), gateway_key=KEY) as s:
        yield s


def client(studio: Studio, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key=KEY, max_retries=0, **kw)


def chat(c: openai.OpenAI, model: str, n: int = 8) -> str:
    r = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=n, temperature=0
    )
    return r.choices[0].message.content or ""


def test_openai_endpoints_and_two_models_at_once(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("chat-a", model=str(tiny_models["llama"]), args=SMALL, aliases=["a"])
    studio.configure("chat-b", model=str(tiny_models["qwen3"]), args=SMALL)
    studio.configure(
        "embed", model=str(tiny_models["llama"]), args=[*SMALL, "--embeddings", "--pooling", "mean"]
    )
    c = client(studio)

    r = c.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=6)
    assert r.choices[0].finish_reason in ("length", "stop") and r.usage and r.usage.completion_tokens > 0
    stream = c.chat.completions.create(
        model="a", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
    )
    chunks = list(stream)
    assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")
    comp = c.completions.create(model="chat-b", prompt="Once upon", max_tokens=5)
    assert comp.choices[0].text is not None and comp.usage and comp.usage.completion_tokens == 5
    emb = c.embeddings.create(model="embed", input=["hello", "world"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 8

    # Anthropic messages, relayed as llama-server speaks them
    r2 = studio.gateway().post(
        "/v1/messages",
        json={"model": "chat-b", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r2.status_code == 200, r2.text
    assert r2.json()["type"] == "message" and r2.json()["content"]

    with studio.api() as api:
        running = {m["name"]: m for m in api.get("/api/running").json()}
    assert {"chat-a", "chat-b", "embed"} <= set(running)
    assert all(running[n]["state"] == "ready" and running[n]["pid"] for n in ("chat-a", "chat-b"))
    assert running["chat-a"]["pid"] != running["chat-b"]["pid"]

    listed = {m.id: m for m in c.models.list()}
    assert {"chat-a", "chat-b", "embed"} <= set(listed)
    assert listed["chat-a"].model_extra and listed["chat-a"].model_extra["status"]["state"] == "ready"

    # a request is counted once its last byte is sent, just after the client has read it
    studio.wait_metric("llamastudio_requests_total", 2, model="chat-a", status="200")
    studio.wait_metric("llamastudio_request_seconds_count", 2, model="chat-a")
    assert studio.metric("llamastudio_generated_tokens_total", model="chat-b") >= 5


def test_streams_are_relayed_unbuffered(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("stream-a", model=str(tiny_models["llama"]), args=SMALL)
    body = {"model": "stream-a", "prompt": "x", "max_tokens": 20, "stream": True}
    with studio.gateway().stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 20


def test_errors_have_one_shape(studio: Studio, tiny_models: dict[str, Path]) -> None:
    c = client(studio)
    with pytest.raises(openai.NotFoundError) as nf:
        chat(c, "no-such-model")
    err = nf.value.body
    assert isinstance(err, dict) and err["source"] == "studio" and "no-such-model" in err["message"]

    with pytest.raises(openai.AuthenticationError):
        chat(openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="wrong", max_retries=0), "chat-a")
    assert studio.gateway().get("/health").status_code == 200  # health needs no key

    bad = studio.gateway().post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["source"] == "studio"

    # an error llama-server produced is relayed with source=upstream
    studio.configure("err-a", model=str(tiny_models["llama"]), args=SMALL)
    up = studio.gateway().post("/v1/chat/completions", json={"model": "err-a", "messages": "not a list"})
    assert up.status_code == 400 and up.json()["error"]["source"] == "upstream"
    assert "messages" in up.json()["error"]["message"]
    # what a model cannot answer is the studio's own 400, before the engine is asked
    own = studio.gateway().post("/v1/embeddings", json={"model": "err-a", "input": "x"})
    assert own.status_code == 400 and own.json()["error"]["source"] == "studio"


def test_concurrency_limit_429_and_queue_full_503(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("limited", model=str(tiny_models["llama"]), args=LONG, max_concurrency=1)
    c = client(studio)
    chat(c, "limited", 2)  # loaded
    body = {"model": "limited", "prompt": "x", "max_tokens": 8000, "stream": True, "ignore_eos": True}
    with studio.gateway().stream("POST", "/v1/completions", json=body) as held:
        assert held.status_code == 200, held.read()
        lines = held.iter_lines()
        next(lines)
        st = studio.status("limited")
        if st["in_flight"] != 1:
            rest = list(lines)
            raise AssertionError((st, len(rest), rest[-3:]))
        with pytest.raises(openai.RateLimitError) as rl:
            chat(c, "limited", 2)
        assert rl.value.body["source"] == "studio"  # type: ignore[index]

    studio.configure("queued", model=str(tiny_models["qwen3"]), args=SMALL, max_queue=1)
    gw = studio.gateway()
    barrier = threading.Barrier(3)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return gw.post("/v1/completions", json={"model": "queued", "prompt": "x", "max_tokens": 2})

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(3)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 1 and 503 in codes, codes
    full = next(r for r in results if r.status_code == 503)
    assert full.headers["retry-after"].isdigit() and full.json()["error"]["code"] == "queue_full"


def test_requests_during_load_share_it_and_alternating_models_do_not_swap(
    studio: Studio, tiny_models: dict[str, Path]
) -> None:
    studio.configure("alt-a", model=str(tiny_models["llama"]), args=SMALL)
    studio.configure("alt-b", model=str(tiny_models["gemma3"]), args=SMALL)
    loads0 = studio.metric("llamastudio_loads_total")
    evict0 = studio.metric("llamastudio_evictions_total")
    c = client(studio)
    with ThreadPoolExecutor(4) as pool:  # all arrive while alt-a is stopped
        outs = list(pool.map(lambda _: chat(c, "alt-a", 3), range(4)))
    assert len(outs) == 4
    assert studio.metric("llamastudio_loads_total") == loads0 + 1
    for i in range(6):
        chat(c, "alt-a" if i % 2 else "alt-b", 2)
    assert studio.metric("llamastudio_loads_total") == loads0 + 2
    assert studio.metric("llamastudio_evictions_total") == evict0


def test_kill_9_mid_stream(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("victim", model=str(tiny_models["llama"]), args=LONG)
    studio.configure("bystander", model=str(tiny_models["qwen3"]), args=SMALL)
    c = client(studio)
    chat(c, "bystander", 2)
    chat(c, "victim", 2)
    bystander_pid = studio.status("bystander")["pid"]
    victim_pid = studio.status("victim")["pid"]
    stream = c.completions.create(
        model="victim", prompt="x", max_tokens=8000, stream=True, extra_body={"ignore_eos": True}
    )
    got = 0
    with pytest.raises(openai.APIError) as err:
        for _ in stream:
            got += 1
            if got == 3:
                os.kill(victim_pid, signal.SIGKILL)
    assert got >= 3
    assert "victim" in str(err.value.message) or "engine" in str(err.value.message)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and studio.status("victim")["state"] != "failed":
        time.sleep(0.1)
    st = studio.status("victim")
    assert st["state"] == "failed" and "-9" in (st["reason"] or ""), st
    assert chat(c, "victim", 2) is not None  # started again
    assert studio.status("victim")["pid"] not in (None, victim_pid)
    assert studio.status("bystander")["pid"] == bystander_pid  # untouched


def test_client_disconnect_cancels_upstream(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("cancel-a", model=str(tiny_models["llama"]), args=LONG)
    c = client(studio)
    chat(c, "cancel-a", 2)
    before = studio.metric("llamastudio_client_disconnects_total", model="cancel-a")
    body = {"model": "cancel-a", "prompt": "x", "max_tokens": 8000, "stream": True, "ignore_eos": True}
    with studio.gateway().stream("POST", "/v1/completions", json=body) as r:
        next(r.iter_lines())
    # llama-server stops generating: its slots go idle (read through the gateway: the engine's
    # own port wants the per-process key only the studio knows)
    deadline = time.monotonic() + 10
    busy = True
    while time.monotonic() < deadline and busy:
        slots = studio.gateway().get("/slots", params={"model": "cancel-a"}).json()
        busy = any(s.get("is_processing") for s in slots)
        time.sleep(0.1)
    assert not busy
    assert studio.metric("llamastudio_client_disconnects_total", model="cancel-a") == before + 1
    assert studio.status("cancel-a")["in_flight"] == 0


def test_ttl_unloads_idle_models_and_pinned_stay(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("short", model=str(tiny_models["llama"]), args=SMALL, ttl=1)
    studio.configure("pinned", model=str(tiny_models["qwen3"]), args=SMALL, ttl=1, pinned=True)
    c = client(studio)
    chat(c, "short", 2)
    chat(c, "pinned", 2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and studio.status("short")["state"] != "stopped":
        time.sleep(0.2)
    assert studio.status("short")["state"] == "stopped"
    assert studio.status("pinned")["state"] == "ready"
    assert studio.metric("llamastudio_ttl_unloads_total") >= 1


def test_start_stop_logs_command_and_cli(studio: Studio, tiny_models: dict[str, Path]) -> None:
    studio.configure("cli-a", model=str(tiny_models["llama"]), args=SMALL)
    with studio.api() as api:
        cmd = api.get("/api/models/cli-a/command").json()
        assert cmd["argv"][0].endswith("llama-server")
        assert cmd["argv"][cmd["argv"].index("-m") + 1] == str(tiny_models["llama"])
        assert cmd["argv"][cmd["argv"].index("--port") + 1] == "${PORT}"
        assert cmd["argv"][cmd["argv"].index("-c") + 1] == "512"
        started = api.post("/api/models/cli-a/start").json()
        assert started["state"] == "ready"
        logs = api.get("/api/models/cli-a/logs", params={"tail": 50}).json()["lines"]
        assert any("listening" in line or "server is listening" in line for line in logs), logs[-5:]
        assert api.post("/api/models/cli-a/stop").json()["state"] == "stopped"
        assert api.post("/api/models/nope/start").json()["error"]["code"] == "not_found"

    out = studio.cli("run", "cli-a").stdout
    assert f"{studio.gateway_url}/v1" in out and "cli-a" in out
    ps = studio.cli("ps").stdout
    assert "cli-a" in ps and "ready" in ps
    studio.cli("stop", "cli-a")
    assert studio.status("cli-a")["state"] == "stopped"
    missing = studio.cli("stop", "nope", check=False)
    assert (
        missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
    )


def test_eviction_by_memory_waits_for_in_flight_stream(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    """A profile with room for one model: the second evicts the first, after its stream ends."""
    need = max(
        next(d.total for d in estimate(load_model(str(tiny_models[m])), parse_server_args(SMALL)).devices)
        for m in ("llama", "qwen3")
    )
    profile = tmp_path / "one-model.json"
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + need * 3 // 2}))
    with Studio(tmp_path / "s", rig_bin("llama-server"), hardware=str(profile)) as studio:
        studio.configure("first", model=str(tiny_models["llama"]), args=LONG)
        studio.configure("second", model=str(tiny_models["qwen3"]), args=LONG)
        c = openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="x", max_retries=0)
        chat(c, "first", 2)
        stream = c.completions.create(
            model="first", prompt="x", max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
        )
        texts: list[str] = []
        second_done: list[float] = []

        def ask_second() -> None:
            chat(c, "second", 2)
            second_done.append(time.monotonic())

        worker: threading.Thread | None = None
        for chunk in stream:
            texts.append(chunk.choices[0].text)
            if len(texts) == 1:
                worker = threading.Thread(target=ask_second)
                worker.start()
                time.sleep(0.3)  # the second request is now waiting for room
        first_done = time.monotonic()
        assert worker is not None
        worker.join(60)
        assert len(texts) >= 3000 * 0.9  # the stream finished intact (one chunk per token)
        assert chunk.choices[0].finish_reason == "length"
        assert second_done and second_done[0] > first_done
        assert studio.status("first")["state"] == "stopped"
        assert studio.status("second")["state"] == "ready"
        assert studio.metric("llamastudio_evictions_total") == 1


def test_orphans_of_a_killed_studio_are_cleaned_up(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    s = Studio(tmp_path / "s", rig_bin("llama-server"))
    with s:
        s.configure("orphan", model=str(tiny_models["llama"]), args=SMALL)
        with s.api() as api:
            pid = api.post("/api/models/orphan/start").json()["pid"]
        s.kill()
        try:
            assert Path(f"/proc/{pid}").exists()  # left behind
            s.start()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.1)
            assert not alive(pid)
        finally:  # a failed run must not leave the orphan behind for the rest of the suite
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_model_that_cannot_start_says_why_and_backs_off(
    studio: Studio, tiny_models: dict[str, Path]
) -> None:
    studio.configure("broken", model=str(tiny_models["llama"]), args=[*SMALL, "--rope-scaling", "nonsense"])
    gw = studio.gateway()
    body = {"model": "broken", "prompt": "x", "max_tokens": 2}
    first = gw.post("/v1/completions", json=body)
    assert first.status_code == 503, first.text
    err = first.json()["error"]
    assert err["code"] == "model_failed_to_start" and "rope-scaling" in err["message"]
    assert studio.status("broken")["state"] == "failed"
    assert gw.post("/v1/completions", json=body).status_code == 503  # tried again: 2 failures
    backed_off = gw.post("/v1/completions", json=body)  # within the back-off: not started at all
    assert backed_off.status_code == 503 and "next try in" in backed_off.json()["error"]["message"]
    assert int(backed_off.headers["retry-after"]) >= 1
    # fixing the configuration clears the failure
    studio.configure("broken", model=str(tiny_models["llama"]), args=SMALL)
    time.sleep(1.1)
    assert gw.post("/v1/completions", json=body).status_code == 200


def test_import_export_through_the_api_and_the_cli(
    studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    studio.configure("io-a", model=str(tiny_models["llama"]), args=SMALL, aliases=["io"], ttl=30, group="io")
    with studio.api() as api:
        before = api.get("/api/models/io-a/config").json()["config"]
        text = api.get("/api/served/export", params={"format": "llama-swap"}).text
        assert "io-a" in text and "${PORT}" in text
        assert api.delete("/api/models/io-a/config").status_code == 204
        r = api.post("/api/served/import", json={"format": "llama-swap", "text": text})
        assert r.status_code == 200 and "io-a" in r.json()["imported"]
        assert api.get("/api/models/io-a/config").json()["config"] == before
        bad = api.post("/api/served/import", json={"format": "preset", "text": "[x]\nc = 1\n"})
        assert bad.status_code == 400 and bad.json()["error"]["source"] == "studio"
    ini = tmp_path / "models.ini"
    studio.cli("models", "export", "--format", "preset", "-o", str(ini))
    assert "[io-a]" in ini.read_text()
    assert "imported io-a" in studio.cli("models", "import", str(ini)).stdout
