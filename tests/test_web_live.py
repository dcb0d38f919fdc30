"""Issue N (N-live): live activity on the Dashboard and Running views, the chat playground's
memory, Markdown and copy buttons, Stop in the completion pane, failed states, engine jobs that can
be cleared and retried — in Debian chromium against a real ``llamastudio serve`` and the rig's
llama-server; requests made with the real ``openai`` SDK.

Screenshots go to ``test-output/screenshots/`` (not committed)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio
from tests.rig.web import CHROMIUM, _page, shot

playwright_api = pytest.importorskip("playwright.sync_api")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
CHAT_URL = "**/gateway/v1/chat/completions"


def add_model(studio: Studio, path: Path, args: list[str] | None = None) -> str:
    """Add a GGUF to the studio's library (with ``args``); its served name."""
    with studio.api() as api:
        r = api.post("/api/models", json={"path": str(path)})
        assert r.status_code in (200, 201), r.text
        name = str(next(m["served_name"] for m in r.json() if m["path"] == str(path)))
        if args is not None:
            r = api.patch(f"/api/models/{name}/config", json={"args": args})
            assert r.status_code == 200, r.text
        return name


def copy_model(tiny_models: dict[str, Path], tmp_path: Path, stem: str) -> Path:
    path = tmp_path / f"{stem}.gguf"
    shutil.copyfile(tiny_models["llama-Q8_0"], path)
    return path


def pick_model(pg: Any, name: str) -> None:
    pg.get_by_test_id("chat-model").click()
    pg.get_by_role("option", name=name, exact=True).click()


def wait_idle(studio: Studio, name: str, timeout: float = 15) -> None:
    """Until the engine's slots are all idle (read through the gateway: the engine's own port
    wants the per-process key only the studio knows)."""
    deadline = time.monotonic() + timeout
    busy = True
    with studio.gateway() as gw:
        while busy and time.monotonic() < deadline:
            slots = gw.get("/slots", params={"model": name}).json()
            busy = any(s.get("is_processing") for s in slots)
            if busy:
                time.sleep(0.1)
    assert not busy, f"{name}: the engine is still generating"


def activity(studio: Studio, **query: str) -> list[dict[str, Any]]:
    with studio.api() as api:
        r = api.get("/api/activity", params=query)
        assert r.status_code == 200, r.text
        return list(r.json())


def test_activity_panel_shows_sdk_requests_live(
    browser: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A request made with the openai SDK shows on the Dashboard while in flight and then with its
    tokens, TTFT and speed; GET /api/activity returns the same figures; Running narrows to a model."""
    expect = playwright_api.expect
    name = add_model(
        studio,
        copy_model(tiny_models, tmp_path, "tiny-activity"),
        ["-c", "512", "-np", "1", "--context-shift"],
    )
    client = openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="none", max_retries=0)
    with _page(browser) as pg:  # type: ignore[arg-type]
        pg.goto(studio.api_url)
        panel = pg.get_by_test_id("activity")
        expect(panel).to_be_visible()
        # in flight: a long streamed completion, read only to its first chunk
        stream = client.completions.create(
            model=name,
            prompt="Once upon a time",
            max_tokens=100_000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        next(iter(stream))
        status = panel.get_by_test_id("activity-status").first
        expect(status).to_have_text("running")
        expect(panel.get_by_test_id("activity-model").first).to_have_text(name)
        expect(panel.get_by_test_id("activity-duration").first).to_have_text(
            re.compile(r"^\d+(\.\d+)? m?s…$")
        )
        shot(pg, "activity-in-flight")
        stream.close()  # the client goes away: the gateway closes the upstream (499)
        expect(status).to_have_text("499 gone")
        wait_idle(studio, name)

        reply = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hello there"}], max_tokens=16
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        first = panel.locator("tbody tr").first
        expect(first.get_by_test_id("activity-status")).to_have_text("200")
        tokens = first.get_by_test_id("activity-tokens")
        expect(tokens).to_have_text(
            re.compile(rf"^{reply.usage.prompt_tokens}( \(\d+ cached\))? → {reply.usage.completion_tokens}$")
        )
        expect(first.get_by_test_id("activity-ttft")).to_have_text(re.compile(r"^\d+(\.\d+)? m?s$"))
        expect(first.get_by_test_id("activity-speed")).to_have_text(re.compile(r"^\d+\.\d$"))
        shot(pg, "activity-dashboard")

        rows = activity(studio, model=name)
        assert [r["status"] for r in rows[:2]] == [200, 499], rows[:2]
        done = rows[0]
        assert done["path"] == "/v1/chat/completions" and done["model"] == name
        assert done["tokens_out"] == reply.usage.completion_tokens
        assert done["tokens_in"] == reply.usage.prompt_tokens
        assert done["tokens_per_second"] > 0
        assert 0 < done["ttft_ms"] <= done["duration_ms"]
        assert done["queued_ms"] is not None and done["queued_ms"] <= done["duration_ms"]
        assert rows[1]["path"] == "/v1/completions" and rows[1]["duration_ms"] > 0

        # Running: the activity of one model
        pg.locator("[data-nav=Running]").click()
        pg.get_by_test_id(f"activity-of-{name}").click()
        card = pg.get_by_test_id("running-activity")
        expect(card.locator("tbody tr")).to_have_count(2)
        expect(card.get_by_test_id("activity-model")).to_have_count(0)  # one model: no model column
        shot(pg, "activity-running")


def test_chat_history_survives_navigation_and_reload_and_clear(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """The conversation is kept per model: after going to the Library and back, and after a
    reload, it is there (model chosen again); Clear empties it for good. The system prompt and
    sampling settings are sent with the request and kept too; each reply shows its TTFT."""
    pg: Any = page
    expect = playwright_api.expect
    name = add_model(studio, copy_model(tiny_models, tmp_path, "tiny-history"), ["-c", "512"])
    pg.goto(f"{studio.api_url}/running")
    pick_model(pg, name)
    pg.get_by_test_id("chat-settings-toggle").click()
    pg.get_by_label("System prompt").fill("You are terse.")
    pg.get_by_label("Temperature").fill("0.3")
    pg.get_by_label("Top P").fill("0.9")
    pg.get_by_label("Max tokens").fill("12")
    pg.get_by_label("Max tokens").press("Tab")
    box = pg.get_by_test_id("chat-input")
    box.fill("Remember this line")
    with pg.expect_request(lambda r: r.url.endswith("/gateway/v1/chat/completions")) as sent:
        box.press("Enter")
    body = sent.value.post_data_json
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    assert body["messages"][1] == {"role": "user", "content": "Remember this line"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.3, 0.9, 12)
    expect(pg.get_by_test_id("chat-send")).to_be_visible(timeout=60_000)
    expect(pg.get_by_test_id("chat-ttft")).to_have_text(re.compile(r"TTFT \d+\.\d\d s$"))
    reply = pg.get_by_test_id("chat-reply").inner_text()
    shot(pg, "chat-history-before")

    pg.locator("[data-nav=Library]").click()
    expect(pg.get_by_test_id("chat-user")).to_have_count(0)
    pg.locator("[data-nav=Running]").click()
    expect(pg.get_by_test_id("chat-user")).to_have_text(re.compile("Remember this line"))
    expect(pg.get_by_test_id("chat-reply")).to_have_text(reply)
    pg.reload()
    expect(pg.get_by_test_id("chat-user")).to_have_text(re.compile("Remember this line"))
    expect(pg.get_by_test_id("chat-ttft")).to_have_count(1)
    expect(pg.get_by_test_id("chat-system-note")).to_be_visible()  # the settings are kept too
    pg.get_by_test_id("chat-settings-toggle").click()
    expect(pg.get_by_label("Max tokens")).to_have_value("12")
    shot(pg, "chat-history-after-reload")

    pg.get_by_test_id("chat-clear").click()
    expect(pg.get_by_test_id("chat-user")).to_have_count(0)
    expect(pg.get_by_test_id("chat-assistant")).to_have_count(0)
    pg.reload()
    expect(pg.get_by_test_id("chat-input")).to_be_visible()
    expect(pg.get_by_test_id("chat-user")).to_have_count(0)


MARKDOWN_REPLY = (
    "Here is **bold** and a [link](https://example.com).\n\n"
    '<img src=x onerror="window.__xss = 1">\n\n'
    "```python\nprint('hi')\n```\n"
)


def test_markdown_reply_renders_code_with_copy_and_html_as_text(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A reply renders as Markdown: a code block with its own Copy button, bold, an http link;
    an `<img onerror>` in the reply is shown as text and never runs. The reply's copy button
    copies its Markdown source. (The tiny model writes noise, so the reply is the one kept in the
    browser's storage, rendered exactly as a streamed one.)"""
    pg: Any = page
    expect = playwright_api.expect
    name = add_model(studio, copy_model(tiny_models, tmp_path, "tiny-markdown"))
    pg.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=studio.api_url)
    pg.goto(f"{studio.api_url}/running")
    stored = {
        "messages": [
            {"role": "user", "content": "show me"},
            {"role": "assistant", "content": MARKDOWN_REPLY},
        ],
        "settings": {},
    }
    pg.evaluate(
        "([key, value]) => localStorage.setItem(key, value)", [f"llamastudio.chat.{name}", json.dumps(stored)]
    )
    pick_model(pg, name)
    reply = pg.get_by_test_id("chat-reply")
    expect(reply.locator("pre code")).to_have_text("print('hi')")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("a")).to_have_attribute("href", "https://example.com")
    expect(reply).to_contain_text('<img src=x onerror="window.__xss = 1">')  # as text
    expect(reply.locator("img")).to_have_count(0)
    assert pg.evaluate("window.__xss") is None
    reply.get_by_test_id("copy-code").click()
    expect(pg.locator(".p-toast")).to_contain_text("Copied code")
    assert pg.evaluate("navigator.clipboard.readText()") == "print('hi')"
    pg.get_by_test_id("copy-reply").click()
    expect(pg.locator(".p-toast")).to_contain_text("Copied reply")
    assert pg.evaluate("navigator.clipboard.readText()") == MARKDOWN_REPLY
    shot(pg, "chat-markdown")


def test_completion_stop_ends_generation(page: object, studio: Studio, vocab: Vocab, tmp_path: Path) -> None:
    """Stop in the completion pane aborts the request; the gateway closes the upstream and the
    engine stops generating (its one slot goes idle); the partial text stays, marked stopped."""
    pg: Any = page
    expect = playwright_api.expect
    BUILDERS["llama"](tmp_path / "tiny-base-stop.gguf", vocab, chat_template=False)
    name = add_model(studio, tmp_path / "tiny-base-stop.gguf", ["-c", "512", "-np", "1", "--context-shift"])

    def endless(route: Any) -> None:
        body = route.request.post_data_json
        body.update(max_tokens=1_000_000, ignore_eos=True)
        route.continue_(post_data=json.dumps(body))

    pg.route("**/gateway/v1/completions", endless)
    pg.goto(f"{studio.api_url}/running")
    pick_model(pg, name)
    pg.get_by_test_id("completion-input").fill("Once upon a time")
    pg.get_by_test_id("completion-send").click()
    text = pg.get_by_test_id("completion-text")
    expect(text).to_have_text(re.compile(r"\S"), timeout=60_000)  # streaming
    stop = pg.get_by_test_id("completion-stop")
    expect(stop).to_be_visible()
    with studio.gateway() as gw:  # the engine is generating now
        assert any(s.get("is_processing") for s in gw.get("/slots", params={"model": name}).json())
    stop.click()
    expect(pg.get_by_test_id("completion-stopped")).to_be_visible()
    expect(pg.get_by_test_id("completion-send")).to_be_enabled()
    wait_idle(studio, name)
    assert "[error" not in text.inner_text()
    rows = activity(studio, model=name)
    assert rows[0]["status"] == 499 and rows[0]["path"] == "/v1/completions", rows[0]
    shot(pg, "completion-stopped")


def test_failed_model_is_shown_failed_holding_no_memory(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A model whose engine fails to load shows as failed, with why, on the Dashboard and in
    Running, and no memory bar (its process is gone); the failed request is in the activity."""
    pg: Any = page
    expect = playwright_api.expect
    path = copy_model(tiny_models, tmp_path, "tiny-broken")
    name = add_model(studio, path, ["-c", "512"])
    with path.open("r+b") as f:  # the header stays, the tensors are cut: llama-server fails
        f.truncate(path.stat().st_size // 2)
    with studio.gateway() as gw:
        r = gw.post(
            "/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "hi"}]}
        )
    assert r.status_code >= 500, r.text
    pg.goto(studio.api_url)
    block = pg.get_by_test_id(f"dash-model-{name}")
    expect(block.get_by_test_id(f"dash-state-{name}")).to_have_text("failed")
    expect(block.get_by_test_id(f"dash-state-{name}")).to_have_class(re.compile("p-tag-danger"))
    expect(block.get_by_test_id(f"dash-reason-{name}")).to_contain_text("holds no memory")
    expect(block.locator(".membar")).to_have_count(0)
    expect(block.locator("[role=progressbar]")).to_have_count(0)
    row = pg.get_by_test_id("activity").locator("tbody tr").filter(has_text=name).first
    expect(row.get_by_test_id("activity-status")).to_have_text(str(r.status_code))
    shot(pg, "dashboard-failed-model")
    pg.locator("[data-nav=Running]").click()
    expect(pg.get_by_test_id(f"state-{name}")).to_have_text("failed")
    expect(pg.get_by_test_id("running").locator("tr").filter(has_text=name)).to_contain_text("none")


def test_failed_build_log_is_red_and_jobs_clear_and_retry(
    page: object, studio: Studio, tmp_path: Path
) -> None:
    """The build form's fields have labels; a failed build's log is red (tag, card); a failed job
    can be retried (a new job with the same request) and finished jobs cleared, one or all."""
    pg: Any = page
    expect = playwright_api.expect
    broken = tmp_path / "not-llama-live"
    broken.mkdir()
    (broken / "README").write_text("not a llama.cpp tree")
    pg.goto(f"{studio.api_url}/engines")
    for label in ("Source", "Git ref", "CMake args", "CFLAGS", "CXXFLAGS", "Patches", "Name", "Release tag"):
        expect(pg.get_by_label(label, exact=True)).to_be_visible()
    pg.get_by_label("Source", exact=True).fill(str(broken))
    pg.get_by_label("Name", exact=True).fill("will-fail")
    pg.get_by_test_id("build-button").click()
    log = pg.get_by_test_id("build-log")
    expect(pg.get_by_test_id("build-state")).to_have_text("failed", timeout=60_000)
    expect(pg.get_by_test_id("build-state")).to_have_class(re.compile("p-tag-danger"))
    expect(log).to_have_attribute("data-state", "failed")
    red = pg.evaluate("getComputedStyle(document.querySelector('[data-testid=build-log]')).borderLeftColor")
    assert _is_red(red), red
    expect(pg.get_by_test_id("build-error")).to_be_visible()
    shot(pg, "engines-failed-build")

    with studio.api() as api:
        first = next(
            j for j in api.get("/api/engines/jobs").json() if j["title"].startswith(f"build {broken}")
        )
    pg.get_by_test_id(f"job-retry-{first['id']}").click()
    with studio.api() as api:
        deadline = time.monotonic() + 60
        again: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not (again and again[0]["state"] == "failed"):
            again = [
                j
                for j in api.get("/api/engines/jobs").json()
                if j["title"].startswith(f"build {broken}") and j["id"] != first["id"]
            ]
            time.sleep(0.2)
        assert again and again[0]["state"] == "failed", again
        detail = api.get(f"/api/jobs/{again[0]['id']}").json()
        assert detail["params"]["request"]["name"] == "will-fail"  # the same request, run again
        # an unknown job: 404 in the one error shape
        r = api.delete("/api/jobs/nope")
        assert r.status_code == 404 and r.json()["error"]["code"]
    jobs = pg.get_by_test_id("engine-jobs")
    expect(jobs.get_by_test_id(f"job-{again[0]['id']}")).to_be_visible()
    pg.get_by_test_id(f"job-clear-{first['id']}").click()
    expect(jobs.get_by_test_id(f"job-{first['id']}")).to_have_count(0)
    with studio.api() as api:
        ids = [j["id"] for j in api.get("/api/engines/jobs").json()]
        assert first["id"] not in ids and again[0]["id"] in ids
        assert api.get(f"/api/jobs/{first['id']}").status_code == 404
    pg.get_by_test_id("jobs-clear-finished").click()
    expect(jobs).to_have_count(0)
    with studio.api() as api:
        assert [j for j in api.get("/api/engines/jobs").json() if j["state"] in ("done", "failed")] == []
    shot(pg, "engines-jobs-cleared")


def test_phone_layout_keeps_actions_on_screen(
    browser: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """At 390 px the Dashboard, Running and Engines tables are cards: no sideways scroll, and every
    button is inside the viewport once scrolled to (vertically only); light and dark, with
    desktop screenshots of the same views."""
    name = add_model(studio, copy_model(tiny_models, tmp_path, "tiny-phone"), ["-c", "512"])
    with studio.gateway() as gw:
        r = gw.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert r.status_code == 200, r.text
    for scheme in ("light", "dark"):
        with _page(browser, 390, 844, scheme) as pg:  # type: ignore[arg-type]
            for view, button in (("running", f"unload-{name}"), ("engines", None), ("", None)):
                pg.goto(f"{studio.api_url}/{view}")
                pg.wait_for_selector("h2")
                if button:
                    pg.get_by_test_id(button).wait_for()
                pg.wait_for_timeout(300)
                scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                assert scroll <= inner, f"/{view}: {scroll}px wide in {inner}px"
                for b in pg.locator("main button:visible, .main button:visible").all():
                    b.scroll_into_view_if_needed()
                    box = b.bounding_box()
                    if box is None:
                        continue
                    assert box["x"] >= 0 and box["x"] + box["width"] <= inner + 0.5, (
                        view,
                        b.get_attribute("aria-label"),
                        box,
                    )
                assert pg.evaluate("window.scrollX") == 0
                shot(pg, f"phone-live-{view or 'dashboard'}-{scheme}")
        with _page(browser, 1440, 900, scheme) as pg:  # type: ignore[arg-type]
            for view in ("", "running", "engines"):
                pg.goto(f"{studio.api_url}/{view}")
                pg.wait_for_selector("h2")
                pg.wait_for_timeout(300)
                shot(pg, f"desktop-live-{view or 'dashboard'}-{scheme}")


def test_a_loading_model_shows_its_load_bar_live(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """While a model loads, the Dashboard shows its load bar, moving with llama-server's load
    stages (the load job's progress over /ws), and takes it away once the model is ready. A load
    of the tiny model lasts well under a second, so the page records what it showed (a
    MutationObserver) rather than a screenshot catching it."""
    pg: Any = page
    expect = playwright_api.expect
    name = add_model(studio, copy_model(tiny_models, tmp_path, "tiny-loadbar"), ["-c", "512"])
    pg.goto(studio.api_url)
    expect(pg.get_by_test_id("cpu")).to_be_visible()
    expect(pg.get_by_test_id("live").locator(".pi-circle-fill")).to_be_visible()
    pg.evaluate(
        """(id) => {
          window.__load = { seen: 0, values: [], messages: [] }
          const look = () => {
            const bar = document.querySelector(`[data-testid="load-${id}"]`)
            if (!bar) return
            window.__load.seen++
            const v = bar.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow')
            if (v !== null && v !== undefined) window.__load.values.push(Number(v))
            window.__load.messages.push(bar.textContent.trim())
          }
          const all = { subtree: true, childList: true, attributes: true, characterData: true }
          new MutationObserver(look).observe(document.body, all)
        }""",
        name,
    )
    with studio.api() as api:
        r = api.post(f"/api/models/{name}/start")
        assert r.status_code == 200, r.text
    expect(pg.get_by_test_id(f"dash-state-{name}")).to_have_text("ready")
    expect(pg.get_by_test_id(f"load-{name}")).to_have_count(0)  # gone once loaded
    seen = pg.evaluate("window.__load")
    assert seen["seen"] > 0, "the load bar never showed"
    assert any(v > 0 for v in seen["values"]), seen  # it moved with the load's stages
    assert any(m for m in seen["messages"]), seen  # and said which stage


def _is_red(css: str) -> bool:
    m = re.match(r"rgba?\((\d+), (\d+), (\d+)", css)
    return bool(m) and int(m.group(1)) > 180 and int(m.group(2)) < 120 and int(m.group(3)) < 120


def test_activity_api_refuses_bad_queries(studio: Studio) -> None:
    with httpx.Client(base_url=studio.api_url, headers={"X-Studio-Client": "tests"}) as api:
        r = api.get("/api/activity", params={"limit": "0"})
        assert 400 <= r.status_code < 500 and r.json()["error"]["message"], r.text
