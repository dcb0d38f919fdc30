"""Issue F acceptance: the web UI in a real browser (Debian chromium + Playwright) against a real
``llamastudio serve`` — local Hub-compatible server, tiny models, the rig's llama-server.

Screenshots of every view go to ``test-output/screenshots/`` (not committed)."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llamastudio.fit.measured import SCALE_ENV
from tests.rig.embed import write_embedding, write_reranker
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.hub import HubServer
from tests.rig.studio import Studio
from tests.rig.vision import png_bytes, write_vision_pair
from tests.rig.web import CHROMIUM, REPO, SHOTS, _page, shot

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")


def test_search_download_start_chat_stop_delete(page: object, studio: Studio, hub: HubServer) -> None:
    pg = page
    expect = playwright_api.expect
    pg.goto(studio.api_url)  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("cpu")).to_be_visible()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("live").locator(".pi-circle-fill")).to_be_visible()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("gateway-url")).to_contain_text(f":{studio.gateway_port}/v1")  # type: ignore[attr-defined]
    shot(pg, "dashboard")

    # search → quants with fit badges
    pg.locator("[data-nav=Search]").click()  # type: ignore[attr-defined]
    pg.get_by_test_id("search-input").fill("llama")  # type: ignore[attr-defined]
    pg.get_by_test_id("search-button").click()  # type: ignore[attr-defined]
    pg.get_by_text(REPO, exact=True).click()  # type: ignore[attr-defined]
    badges = pg.get_by_test_id("fit-badge")  # type: ignore[attr-defined]
    expect(badges).to_have_count(2)
    expect(badges.first).to_have_text(re.compile(r"CPU|fits|partial"))
    expect(pg.get_by_test_id("quants")).to_contain_text("Q4_K_M")  # type: ignore[attr-defined]
    shot(pg, "search")

    # download with a progress bar (throttled so that it is seen moving)
    hub.throttle = 0.01
    pg.get_by_test_id("download-Q4_K_M").click()  # type: ignore[attr-defined]
    pg.locator("[data-nav=Downloads]").click()  # type: ignore[attr-defined]
    bar = pg.get_by_test_id("download-progress").first  # type: ignore[attr-defined]
    expect(bar).to_be_visible()
    seen: set[int] = set()
    state = pg.get_by_test_id("download-state").first  # type: ignore[attr-defined]
    for _ in range(300):
        seen.add(int(bar.get_attribute("aria-valuenow") or 0))
        if state.inner_text() == "done":
            break
        pg.wait_for_timeout(50)  # type: ignore[attr-defined]
    hub.throttle = 0.0
    expect(state).to_have_text("done")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    assert any(0 < v < 100 for v in seen), seen  # it moved, live
    shot(pg, "downloads")

    # library: config editor with command preview and an estimate that follows the context
    name = f"{REPO}:Q4_K_M"
    pg.locator("[data-nav=Library]").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("library")).to_contain_text(name)  # type: ignore[attr-defined]
    # fields the editor does not show (issue 14: saving from the UI wiped env, group, max_queue)
    kept = {"env": {"LLAMA_ARG_N_PREDICT": "64"}, "group": "ui-group", "max_queue": 9}
    with studio.api() as api:
        assert api.patch(f"/api/models/{name}/config", json=kept).status_code == 200
    pg.get_by_test_id(f"configure-{name}").click()  # type: ignore[attr-defined]
    preview = pg.get_by_test_id("command-preview")  # type: ignore[attr-defined]
    expect(preview).to_contain_text("llama-server")
    expect(preview).to_contain_text("--port ${PORT}")
    estimate = pg.get_by_test_id("estimate-CPU")  # type: ignore[attr-defined]
    expect(estimate).to_be_visible()
    pg.get_by_test_id("args-input").fill("-c 512 -np 1")  # type: ignore[attr-defined]
    expect(preview).to_contain_text("-c 512")
    small = estimate.inner_text()
    ctx = pg.locator("#ctx")  # type: ignore[attr-defined]
    ctx.fill("8192")
    ctx.press("Tab")
    expect(preview).to_contain_text("-c 8192")
    expect(estimate).not_to_have_text(small)
    shot(pg, "config-editor")
    pg.get_by_test_id("smart-auto").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("reasons")).to_be_visible()  # type: ignore[attr-defined]
    pg.get_by_test_id("args-input").fill("-c 1024 -np 1")  # type: ignore[attr-defined]
    expect(preview).to_contain_text("-c 1024")
    pg.get_by_test_id("save-config").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("config-editor")).to_have_count(0)  # type: ignore[attr-defined]
    with studio.api() as api:
        saved = api.get(f"/api/models/{name}/config").json()["config"]
    assert saved["args"] == ["-c", "1024", "-np", "1"]  # the editor's change ...
    assert {k: saved[k] for k in kept} == kept  # ... and nothing else
    assert studio.status(name)["state"] == "stopped"
    pg.get_by_test_id(f"start-{name}").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"state-{name}")).to_have_text("ready", timeout=60_000)  # type: ignore[attr-defined]
    shot(pg, "library")

    # chat in the playground, through the gateway
    pg.locator("[data-nav=Running]").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("running")).to_contain_text(name)  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-model").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name=name).click()  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-input").fill("Hello there")  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-send").click()  # type: ignore[attr-defined]
    reply = pg.get_by_test_id("chat-assistant")  # type: ignore[attr-defined]
    expect(reply).to_contain_text(re.compile(r"assistant:\s*\S+"), timeout=60_000)
    expect(pg.get_by_test_id("chat-send")).to_be_enabled(timeout=60_000)  # type: ignore[attr-defined]  # the stream ended
    assert "[error" not in reply.inner_text()
    shot(pg, "running")

    # stop, then delete
    pg.locator("[data-nav=Library]").click()  # type: ignore[attr-defined]
    pg.get_by_test_id(f"stop-{name}").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"state-{name}")).to_have_text("stopped")  # type: ignore[attr-defined]
    pg.get_by_test_id(f"delete-{name}").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("library")).not_to_contain_text(name)  # type: ignore[attr-defined]
    with studio.api() as api:
        assert all(m["id"] != name for m in api.get("/api/models").json())


def test_engines_and_a_build_log(page: object, studio: Studio, tmp_path: Path) -> None:
    pg = page
    expect = playwright_api.expect
    pg.goto(f"{studio.api_url}/engines")  # type: ignore[attr-defined]
    engines = pg.get_by_test_id("engines")  # type: ignore[attr-defined]
    expect(engines).to_contain_text("external")
    expect(engines).to_contain_text("ok")
    # a source tree without CMakeLists.txt: the build fails fast, with its log on screen
    broken = tmp_path / "not-llama"
    broken.mkdir()
    (broken / "README").write_text("not a llama.cpp tree")
    pg.get_by_test_id("build-source").fill(str(broken))  # type: ignore[attr-defined]
    pg.get_by_test_id("build-button").click()  # type: ignore[attr-defined]
    log = pg.get_by_test_id("build-log")  # type: ignore[attr-defined]
    expect(log).to_be_visible()
    expect(pg.get_by_test_id("build-state")).to_have_text("failed", timeout=60_000)  # type: ignore[attr-defined]
    expect(log.locator("pre")).to_contain_text("error")
    shot(pg, "engines")


def test_dark_mode_is_remembered_and_settings(page: object, studio: Studio) -> None:
    pg = page
    expect = playwright_api.expect
    pg.goto(f"{studio.api_url}/settings")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("token-state")).to_have_text("not set")  # type: ignore[attr-defined]
    html = pg.locator("html")  # type: ignore[attr-defined]
    was_dark = "app-dark" in (html.get_attribute("class") or "")
    pg.get_by_test_id("dark-toggle").click()  # type: ignore[attr-defined]
    assert ("app-dark" in (html.get_attribute("class") or "")) != was_dark
    if was_dark:
        pg.get_by_test_id("dark-toggle").click()  # type: ignore[attr-defined]
    expect(html).to_have_class(re.compile("app-dark"))
    pg.reload()  # type: ignore[attr-defined]
    expect(html).to_have_class(re.compile("app-dark"))
    shot(pg, "settings-dark")


def add_model(studio: Studio, path: Path) -> str:
    """Add a GGUF to the studio's library; its served name."""
    with studio.api() as api:
        r = api.post("/api/models", json={"path": str(path)})
        assert r.status_code in (200, 201), r.text
        return str(next(m["served_name"] for m in r.json() if m["path"] == str(path)))


def test_base_model_is_marked_and_the_playground_completes(
    page: object, studio: Studio, vocab: Vocab, tmp_path: Path
) -> None:
    """Issue 11: a model without a chat template is marked in the Library (with why) and in its
    config editor, and the playground sends it a plain prompt on /v1/completions, never a chat."""
    pg = page
    expect = playwright_api.expect
    BUILDERS["llama"](tmp_path / "tiny-base.gguf", vocab, chat_template=False)
    name = add_model(studio, tmp_path / "tiny-base.gguf")

    pg.goto(f"{studio.api_url}/library")  # type: ignore[attr-defined]
    tag = pg.get_by_test_id(f"tag-no-template-{name}")  # type: ignore[attr-defined]
    expect(tag).to_have_text("no chat template")
    tag.hover()
    expect(pg.locator(".p-tooltip")).to_contain_text("base model")  # type: ignore[attr-defined]
    expect(pg.locator(".p-tooltip")).to_contain_text("/v1/completions")  # type: ignore[attr-defined]
    shot(pg, "library-base-model")
    pg.get_by_test_id(f"configure-{name}").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("config-warning")).to_contain_text("no chat template")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("no-template-hint")).to_be_visible()  # type: ignore[attr-defined]
    pg.locator(".p-dialog-close-button").click()  # type: ignore[attr-defined]

    chats: list[str] = []

    def seen(request: object) -> None:
        url = request.url  # type: ignore[attr-defined]
        if "/chat/completions" in url:
            chats.append(url)

    pg.on("request", seen)  # type: ignore[attr-defined]
    pg.locator("[data-nav=Running]").click()  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-model").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name=name, exact=True).click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("completion-note")).to_contain_text("/v1/completions")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("chat-input")).to_have_count(0)  # type: ignore[attr-defined]
    pg.get_by_test_id("completion-input").fill("Once upon a time")  # type: ignore[attr-defined]
    with pg.expect_request(lambda r: r.url.endswith("/gateway/v1/completions")) as sent:  # type: ignore[attr-defined]
        pg.get_by_test_id("completion-send").click()  # type: ignore[attr-defined]
    body = sent.value.post_data_json
    assert body["model"] == name and body["prompt"] == "Once upon a time" and "messages" not in body
    out = pg.get_by_test_id("completion-text")  # type: ignore[attr-defined]
    expect(out).to_have_text(re.compile(r"\S"), timeout=60_000)  # the model's continuation, streamed
    expect(pg.get_by_test_id("completion-prompt")).to_have_text("Once upon a time")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("completion-send")).to_be_enabled(timeout=60_000)  # type: ignore[attr-defined]  # the stream ended
    assert "[error" not in out.inner_text()
    assert chats == []
    shot(pg, "playground-completion")


def test_named_fields_edit_the_args_line(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 11: each named field writes the flag the raw line shows, a flag typed in the line
    shows in its field, and a context above the trained one is warned about."""
    pg = page
    expect = playwright_api.expect
    src = tmp_path / "tiny-fields.gguf"
    shutil.copyfile(tiny_models["llama"], src)
    name = add_model(studio, src)
    pg.goto(f"{studio.api_url}/library")  # type: ignore[attr-defined]
    pg.get_by_test_id(f"configure-{name}").click()  # type: ignore[attr-defined]
    line = pg.get_by_test_id("args-input")  # type: ignore[attr-defined]
    preview = pg.get_by_test_id("command-preview")  # type: ignore[attr-defined]
    expect(preview).to_contain_text("llama-server")
    expect(pg.get_by_test_id("flags-engine")).to_contain_text("checked against")  # type: ignore[attr-defined]
    pg.get_by_label("planner chooses at load (auto)").uncheck()  # type: ignore[attr-defined]  # the command is the line
    line.fill("--ctx-size 512 -np 1")
    ctx = pg.locator("#ctx")  # type: ignore[attr-defined]
    expect(ctx).to_have_value("512")
    ctx.fill("1024")
    ctx.press("Tab")
    expect(line).to_have_value("-c 1024 -np 1")  # the spelling it had is replaced in place
    batch = pg.locator("#batch")  # type: ignore[attr-defined]
    batch.fill("1024")
    batch.press("Tab")
    expect(line).to_have_value("-c 1024 -np 1 -b 1024")
    pg.get_by_test_id("input-fa").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name="off", exact=True).click()  # type: ignore[attr-defined]
    expect(preview).to_contain_text("-fa off")
    estimate = pg.get_by_test_id("estimate-CPU")  # type: ignore[attr-defined]
    expect(estimate).to_contain_text("KV cache")
    before = estimate.inner_text()

    # a number typed (committed on blur) survives the preview and estimate that land meanwhile:
    # each re-rendered the fields and wiped the typing
    pg.get_by_test_id("fields-sampling").get_by_text("Sampling defaults").click()  # type: ignore[attr-defined]
    pg.get_by_test_id("input-ctk").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name="q8_0", exact=True).click()  # type: ignore[attr-defined]
    expect(line).to_have_value("-c 1024 -np 1 -b 1024 -fa off -ctk q8_0")
    temp = pg.locator("#temp")  # type: ignore[attr-defined]
    temp.fill("0.3")
    expect(estimate).not_to_have_text(before)  # a q8_0 K cache is smaller: the estimate landed
    expect(preview).to_contain_text("-ctk q8_0")
    expect(temp).to_have_value("0.3")
    temp.press("Tab")
    expect(line).to_have_value("-c 1024 -np 1 -b 1024 -fa off -ctk q8_0 --temp 0.3")
    line.fill("-c 1024 -np 1 -b 1024 --top-k 20")  # typed in the line: the fields follow
    expect(pg.locator("#topk")).to_have_value("20")  # type: ignore[attr-defined]
    expect(pg.locator("#temp")).to_have_value("")  # type: ignore[attr-defined]
    fa = pg.get_by_test_id("input-fa").locator(".p-select-label")  # type: ignore[attr-defined]
    expect(fa).to_have_class(re.compile("p-placeholder"))  # llama-server's default, no flag

    ctx.fill("8192")
    ctx.press("Tab")
    warned = pg.get_by_test_id("check-ctx")  # type: ignore[attr-defined]
    expect(warned).to_have_class(re.compile(r"\berror\b"))  # capped at the trained context (issue 12) ...
    pg.get_by_label("allow beyond trained context (RoPE scaling)").check()  # type: ignore[attr-defined]
    expect(warned).to_contain_text("4,096")  # ... unless overridden: then a warning
    expect(warned).to_have_attribute("title", re.compile("RoPE/YaRN"))
    expect(pg.get_by_test_id("field-ctx").locator("small")).to_have_class(re.compile("warn"))  # type: ignore[attr-defined]
    expect(preview).to_contain_text("-c 8192")
    assert not pg.locator("[data-testid^=why-]").count()  # type: ignore[attr-defined]  # the rig's build has them all
    shot(pg, "config-fields")
    pg.get_by_test_id("save-config").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("config-editor")).to_have_count(0)  # type: ignore[attr-defined]
    with studio.api() as api:
        saved = api.get(f"/api/models/{name}/config").json()["config"]
    assert saved["args"] == ["-c", "8192", "-np", "1", "-b", "1024", "--top-k", "20"]
    assert saved["auto"] is False


def pick_model(pg: object, name: str) -> None:
    pg.get_by_test_id("chat-model").click()  # type: ignore[attr-defined]
    pg.get_by_role("option", name=name, exact=True).click()  # type: ignore[attr-defined]


def test_vision_model_takes_an_image(page: object, studio: Studio, vocab: Vocab, tmp_path: Path) -> None:
    """Issue 11: a vision model (its mmproj beside it) is marked, its projector and the memory the
    projector takes show in the editor, and the playground sends an attached PNG as a data URI."""
    pg = page
    expect = playwright_api.expect
    model, mmproj = write_vision_pair(tmp_path / "vision", vocab)
    name = add_model(studio, model)
    pg.goto(f"{studio.api_url}/library")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"tag-vision-{name}")).to_have_text("vision")  # type: ignore[attr-defined]
    pg.get_by_test_id(f"configure-{name}").click()  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("input-mmproj")).to_contain_text(mmproj.name)  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("command-preview")).to_contain_text(f"-mm {mmproj}")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("estimate-CPU").get_by_test_id("part-mmproj")).to_contain_text("projector")  # type: ignore[attr-defined]
    pg.locator(".p-dialog-close-button").click()  # type: ignore[attr-defined]

    image = tmp_path / "picture.png"
    image.write_bytes(png_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    pg.locator("[data-nav=Running]").click()  # type: ignore[attr-defined]
    pick_model(pg, name)
    pg.get_by_test_id("chat-image-input").set_input_files(str(tmp_path / "notes.txt"))  # type: ignore[attr-defined]
    expect(pg.locator(".p-toast")).to_contain_text("not a PNG or JPEG")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("chat-attachment")).to_have_count(0)  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-image-input").set_input_files(str(image))  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("chat-attachment")).to_contain_text("picture.png")  # type: ignore[attr-defined]
    pg.get_by_test_id("chat-input").fill("What is in the picture?")  # type: ignore[attr-defined]
    with pg.expect_response(lambda r: r.url.endswith("/gateway/v1/chat/completions")) as got:  # type: ignore[attr-defined]
        pg.get_by_test_id("chat-send").click()  # type: ignore[attr-defined]
    assert got.value.status == 200
    text, part = got.value.request.post_data_json["messages"][0]["content"]
    assert text == {"type": "text", "text": "What is in the picture?"}
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    expect(pg.get_by_test_id("chat-image")).to_be_visible()  # type: ignore[attr-defined]
    reply = pg.get_by_test_id("chat-assistant")  # type: ignore[attr-defined]
    expect(reply).to_contain_text(re.compile(r"assistant:\s*\S+"), timeout=60_000)
    expect(pg.get_by_test_id("chat-send")).to_be_enabled(timeout=60_000)  # type: ignore[attr-defined]
    assert "[error" not in reply.inner_text()
    shot(pg, "playground-vision")


def test_chat_sends_one_message_at_a_time_and_stop_keeps_the_partial_reply(
    page: object, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Issue N: while a reply streams, Enter sends nothing more (the input stays editable); Stop
    aborts the request, the gateway closes the upstream and llama-server stops generating (one
    slot, so the next reply could not start otherwise); the partial reply stays, marked stopped;
    a finished reply shows its token count and speed from the final chunk's timings."""
    pg = page
    expect = playwright_api.expect
    model = tmp_path / "tiny-long.gguf"
    shutil.copyfile(tiny_models["llama-Q8_0"], model)
    name = add_model(studio, model)
    with studio.api() as api:  # one slot; context shift: the reply runs until max_tokens or Stop
        r = api.patch(
            f"/api/models/{name}/config", json={"args": ["-c", "512", "-np", "1", "--context-shift"]}
        )
        assert r.status_code == 200, r.text

    def endless(route: object) -> None:
        body = route.request.post_data_json  # type: ignore[attr-defined]
        body.update(max_tokens=1_000_000, ignore_eos=True)
        route.continue_(post_data=json.dumps(body))  # type: ignore[attr-defined]

    chats: list[str] = []
    pg.on("request", lambda r: chats.append(r.url) if r.url.endswith("/v1/chat/completions") else None)  # type: ignore[attr-defined]
    pg.route("**/gateway/v1/chat/completions", endless)  # type: ignore[attr-defined]
    pg.goto(f"{studio.api_url}/running")  # type: ignore[attr-defined]
    pick_model(pg, name)
    box = pg.get_by_test_id("chat-input")  # type: ignore[attr-defined]
    box.fill("Tell me a long story")
    box.press("Enter")
    reply = pg.get_by_test_id("chat-assistant")  # type: ignore[attr-defined]
    expect(reply).to_contain_text(re.compile(r"assistant:\s*\S+"), timeout=60_000)  # streaming
    stop = pg.get_by_test_id("chat-stop")  # type: ignore[attr-defined]
    expect(stop).to_be_visible()
    expect(pg.get_by_test_id("chat-send")).to_have_count(0)  # type: ignore[attr-defined]
    box.fill("And another one")  # editable while streaming ...
    box.press("Enter")  # ... but nothing is sent
    expect(box).to_have_value("And another one")
    expect(pg.get_by_test_id("chat-user")).to_have_count(1)  # type: ignore[attr-defined]
    assert len(chats) == 1, chats
    stop.click()
    expect(pg.get_by_test_id("chat-send")).to_be_visible()  # type: ignore[attr-defined]
    expect(stop).to_have_count(0)
    expect(pg.get_by_test_id("chat-stopped")).to_have_count(1)  # type: ignore[attr-defined]
    partial = reply.inner_text()
    assert re.search(r"assistant:\s*\S+", partial) and "[error" not in partial, partial
    assert len(chats) == 1, chats
    shot(pg, "playground-stopped")

    # the slot is free again: a normal reply streams to its end, with its figures. A new
    # conversation: the stopped reply may already be longer than the 512-token context (it runs
    # at hundreds of tokens a second until Stop), and sending it back would be refused.
    pg.unroute("**/gateway/v1/chat/completions")  # type: ignore[attr-defined]
    pg.get_by_role("button", name="Clear").click()  # type: ignore[attr-defined]
    expect(reply).to_have_count(0)
    box.fill("And another one")
    with pg.expect_request(lambda r: r.url.endswith("/gateway/v1/chat/completions")) as sent:  # type: ignore[attr-defined]
        box.press("Enter")
    assert sent.value.post_data_json["stream_options"] == {"include_usage": True}
    expect(pg.get_by_test_id("chat-send")).to_be_visible(timeout=60_000)  # type: ignore[attr-defined]  # it ended
    expect(reply).to_have_count(1)
    assert "[error" not in reply.inner_text(), reply.inner_text()
    stats = pg.get_by_test_id("chat-stats")  # type: ignore[attr-defined]
    expect(stats).to_have_count(1)
    expect(stats).to_have_text(re.compile(r"^[1-9]\d* tokens · \d+\.\d tok/s$"))
    assert len(chats) == 2, chats
    shot(pg, "playground-chat-stats")


def test_embedding_and_rerank_tryouts(page: object, studio: Studio, tmp_path: Path) -> None:
    """Issue 11: an embedding model and a reranker are marked, and the playground shows what they
    answer (vectors and their similarity; a score per document) instead of a chat box."""
    pg = page
    expect = playwright_api.expect
    write_embedding(tmp_path / "tiny-embed.gguf")
    write_reranker(tmp_path / "tiny-rerank.gguf")
    embed = add_model(studio, tmp_path / "tiny-embed.gguf")
    rerank = add_model(studio, tmp_path / "tiny-rerank.gguf")
    pg.goto(f"{studio.api_url}/library")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"tag-embedding-{embed}")).to_have_text("embedding")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"tag-rerank-{rerank}")).to_have_text("reranker")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id(f"tag-no-template-{embed}")).to_have_count(0)  # type: ignore[attr-defined]

    pg.locator("[data-nav=Running]").click()  # type: ignore[attr-defined]
    pick_model(pg, embed)
    expect(pg.get_by_test_id("embedding-note")).to_contain_text("/v1/embeddings")  # type: ignore[attr-defined]
    expect(pg.get_by_test_id("chat-input")).to_have_count(0)  # type: ignore[attr-defined]
    pg.get_by_test_id("embedding-input").fill("a llama\nan alpaca")  # type: ignore[attr-defined]
    with pg.expect_request(lambda r: r.url.endswith("/gateway/v1/embeddings")) as sent:  # type: ignore[attr-defined]
        pg.get_by_test_id("embedding-send").click()  # type: ignore[attr-defined]
    assert sent.value.post_data_json["input"] == ["a llama", "an alpaca"]
    result = pg.get_by_test_id("embedding-result")  # type: ignore[attr-defined]
    expect(result).to_contain_text("2 vectors of 64 dimensions", timeout=60_000)  # the tiny BERT's width
    expect(result.locator("tr").nth(1)).to_contain_text("1.00")  # a text is like itself

    pick_model(pg, rerank)
    expect(pg.get_by_test_id("rerank-note")).to_contain_text("/v1/rerank")  # type: ignore[attr-defined]
    pg.get_by_test_id("rerank-query").fill("what do llamas eat")  # type: ignore[attr-defined]
    pg.get_by_test_id("rerank-documents").fill("grass and hay\nthe Eiffel tower\nllamas are camelids")  # type: ignore[attr-defined]
    pg.get_by_test_id("rerank-send").click()  # type: ignore[attr-defined]
    ranked = pg.get_by_test_id("rerank-result").locator("li")  # type: ignore[attr-defined]
    expect(ranked).to_have_count(3, timeout=60_000)  # a score for every document
    scores = [float(t.split()[0]) for t in ranked.all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    shot(pg, "playground-rerank")


def _measured(studio: Studio, name: str, timeout: float = 30) -> dict[str, Any]:
    """The configuration's memory once the load that ran has been measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with studio.api() as api:
            memory: dict[str, Any] = api.get(f"/api/models/{name}/config").json()["prepared"]["memory"]
        if memory["measured"] is not None:
            return memory
        time.sleep(0.2)
    raise AssertionError(f"{name}: no measurement after {timeout}s")


def _open_editor(pg: Any, studio: Studio, name: str) -> Any:
    pg.goto(f"{studio.api_url}/library")
    pg.get_by_test_id(f"configure-{name}").click()
    return pg.get_by_test_id("estimate")


def test_the_editor_says_what_the_reservation_is_based_on(
    browser: Any, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Issue K.3 in the editor: before a load the reservation is the estimate; the first load of
    the configuration is measured, and then the editor says "measured on <date>" with the
    estimated-vs-measured line, its drift highlighted (the test hook halves every estimate, so the
    drift is -50 %: red, the estimate was too low); a configuration's own reserve is "set by hand".
    Its screens at 1440×900 and 390×844, light and dark, go to test-output/screenshots/."""
    expect = playwright_api.expect
    name = "measured-llama"
    with Studio(tmp_path / "s", rig_bin("llama-server"), env={SCALE_ENV: "0.5"}) as studio:
        studio.configure(name, model=str(tiny_models["llama"]), args=["-c", "512", "-np", "1"])
        with _page(browser) as pg:
            memory = _open_editor(pg, studio, name)
            expect(memory.get_by_test_id("memory-source")).to_have_text("estimated")
            expect(memory.get_by_test_id("memory-line-CPU")).to_contain_text("not measured yet")
            expect(memory.get_by_test_id("part-model")).to_contain_text("weights")
            memory.screenshot(path=str(SHOTS / "memory-estimated.png"))
            pg.locator(".p-dialog-close-button").click()
            pg.get_by_test_id(f"start-{name}").click()
            expect(pg.get_by_test_id(f"state-{name}")).to_have_text("ready", timeout=60_000)
        measured = _measured(studio, name)  # the first load of the configuration was measured
        assert measured["drift"]["CPU"] < -0.4, measured

        day = measured["measured_at"][:10]
        for width, height in ((1440, 900), (390, 844)):
            for scheme in ("light", "dark"):
                with _page(browser, width, height, scheme) as pg:
                    memory = _open_editor(pg, studio, name)
                    badge = memory.get_by_test_id("memory-source")
                    expect(badge).to_have_text(f"measured on {day}")
                    expect(badge).to_have_attribute("data-source", "measured")
                    line = memory.get_by_test_id("memory-line-CPU")
                    expect(line).to_contain_text(
                        re.compile(rf"CPU: estimated [\d.]+ MiB, measured [\d.]+ MiB on {day}")
                    )
                    drift = line.get_by_test_id("drift-CPU")
                    expect(drift).to_have_text(re.compile(r"\(-[45]\d\.\d %\)"))
                    expect(drift).to_have_class(re.compile(r"\blow\b"))  # red: the estimate was too low
                    memory.scroll_into_view_if_needed()
                    pg.wait_for_timeout(300)  # the dialog's opening animation
                    pg.screenshot(path=str(SHOTS / f"memory-measured-{width}-{scheme}.png"))
                    scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                    assert scroll <= inner, f"{width}px {scheme}: the page is {scroll}px wide"

        with _page(browser) as pg:
            estimates: list[str] = []
            pg.on("request", lambda r: estimates.extend([r.url] if "/estimate" in r.url else []))
            memory = _open_editor(pg, studio, name)
            badge = memory.get_by_test_id("memory-source")
            expect(badge).to_have_text(f"measured on {day}")
            # an unsaved edit is another load: the preview's own memory, not measured yet
            pg.get_by_test_id("args-input").fill("-c 1024 -np 1")
            expect(badge).to_have_text("estimated")
            expect(memory.get_by_test_id("memory-line-CPU")).to_contain_text("not measured yet")
            expect(memory).to_contain_text("context 1,024 tokens")
            assert estimates == []  # the bar's parts come with the view: no second request

            with studio.api() as api:  # a configuration's own figure
                r = api.patch(f"/api/models/{name}/config", json={"reserve": {"CPU": 64 * 1024 * 1024}})
                assert r.status_code == 200, r.text
            # the preview that lands after opening keeps the stored reserve the editor does not show
            with pg.expect_response(lambda r: r.url.endswith("/preview")):
                memory = _open_editor(pg, studio, name)
            expect(memory.get_by_test_id("memory-source")).to_have_text("set by hand")
            expect(memory.get_by_test_id("estimate-CPU")).to_contain_text("64.0 MiB")
            expect(memory.get_by_test_id("part-above")).to_contain_text("reserved beyond the estimate")
            expect(memory.get_by_test_id("drift-CPU")).to_be_visible()  # the measurement stays shown
            memory.screenshot(path=str(SHOTS / "memory-manual.png"))


def test_unknown_api_paths_stay_json_and_the_ui_serves_client_routes(studio: Studio) -> None:
    with studio.api() as api:
        r = api.get("/api/no-such-thing")
        assert r.status_code == 404 and r.json()["error"]["source"] == "studio"
        page = api.get("/library")
        assert page.status_code == 200 and '<div id="app">' in page.text
        assert api.get("/../../etc/passwd").status_code in (200, 404)  # never a file outside dist
        assert "root:" not in api.get("/..%2f..%2f..%2fetc/passwd").text
    assert shutil.which("chromium") or CHROMIUM.exists()
