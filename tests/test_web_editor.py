"""Issue 12 #3 in a real browser: a config editor that refuses what will fail — flags checked as
the pinned llama-server reads them as they are typed (and by the API), unreadable quoting, a stale
preview while re-estimating, the trained context as a cap with an explicit override, Save vs
Save & reload for a running model, and the TTL field said in words.

Real parts: ``llamastudio serve`` with the rig's llama-server, the tiny Llama GGUF (trained for
4,096 tokens), Debian chromium. Screenshots go to ``test-output/screenshots/``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.rig.studio import Studio
from tests.rig.web import CHROMIUM, SHOTS, shot

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
expect = playwright_api.expect


def _model(studio: Studio, tiny: Path, tmp_path: Path, stem: str) -> str:
    """A copy of the tiny Llama added to the library (``tmp_path / f"{stem}.gguf"``); its served
    name."""
    src = tmp_path / f"{stem}.gguf"
    shutil.copyfile(tiny, src)
    with studio.api() as api:
        r = api.post("/api/models", json={"path": str(src)})
        assert r.status_code in (200, 201), r.text
        return str(next(m["served_name"] for m in r.json() if m["path"] == str(src)))


def _editor(pg: Any, studio: Studio, name: str) -> Any:
    pg.goto(f"{studio.api_url}/library")
    pg.get_by_test_id(f"configure-{name}").click()
    preview = pg.get_by_test_id("command-preview")
    expect(preview).to_contain_text("llama-server")
    return preview


def test_unknown_flag_is_red_in_the_engines_words_and_refused_by_ui_and_api(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """``--bogus-flag`` once got a green check and then failed at start."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "bogus")
    preview = _editor(pg, studio, name)
    line, save = pg.get_by_test_id("args-input"), pg.get_by_test_id("save-config")
    line.fill("-c 512 -np 1")
    expect(preview).to_contain_text("-c 512")
    expect(pg.get_by_test_id("flags-engine").locator(".pi-check")).to_be_visible()
    expect(save).to_be_enabled()

    line.fill("-c 512 -np 1 --bogus-flag")
    problem = pg.get_by_test_id("flag-problem---bogus-flag")
    expect(problem).to_contain_text("error: invalid argument: --bogus-flag")  # llama-server's own line
    expect(problem).to_have_css("color", re.compile(r"rgb\(2[0-9]{2}, \d{1,2}, \d{1,2}\)"))  # red
    expect(pg.get_by_test_id("flags-engine")).to_have_count(0)  # no check mark
    expect(save).to_be_disabled()
    expect(pg.get_by_test_id("save-blocked")).to_contain_text("--bogus-flag would stop the engine")
    expect(pg.get_by_test_id("config-error")).to_contain_text("does not know the flag --bogus-flag")
    shot(pg, "editor-unknown-flag")

    line.fill("-c")  # a value missing
    expect(pg.get_by_test_id("flag-problem--c")).to_contain_text(
        'error while handling argument "-c": expected value for argument'
    )
    expect(save).to_be_disabled()
    line.fill("-fa maybe")  # a value outside the set
    expect(pg.get_by_test_id("flag-problem--fa")).to_contain_text("unknown value for --flash-attn: 'maybe'")
    line.fill(
        "-c 512 --top-k=20"
    )  # llama-server reads no --flag=VALUE (the studio re-spells only what it models)
    expect(pg.get_by_test_id("flag-problem---top-k")).to_contain_text("error: invalid argument: --top-k=20")
    # a number the editor does not know to check: the studio's preview refuses it, with the flag
    line.fill("-c 512 --ctx-checkpoints many")
    refused = pg.get_by_test_id("flag-problem---ctx-checkpoints")
    expect(refused).to_contain_text('error while handling argument "--ctx-checkpoints": stoi')
    expect(save).to_be_disabled()

    line.fill("-c 768 -np 1 --jinja")  # fixed: saved as typed
    expect(preview).to_contain_text("-c 768")
    expect(save).to_be_enabled()
    save.click()
    expect(pg.get_by_test_id("config-editor")).to_have_count(0)
    with studio.api() as api:
        assert api.get(f"/api/models/{name}/config").json()["config"]["args"] == [
            "-c",
            "768",
            "-np",
            "1",
            "--jinja",
        ]

        # the API refuses the same, for the CLI and any client: one error shape naming the flag
        for args, flag, says in (
            (["--bogus-flag"], "--bogus-flag", None),
            (["-c"], "-c", 'error while handling argument "-c": expected value for argument'),
            (["--top-k", "x"], "--top-k", 'error while handling argument "--top-k": stoi'),
            (["--temp", "warm"], "--temp", 'error while handling argument "--temp": stof'),
            (["-sm", "sideways"], "-sm", None),
            (["--seed=-1"], "--seed", "error: invalid argument: --seed=-1"),
        ):
            for r in (
                api.patch(f"/api/models/{name}/config", json={"args": args}),
                api.put(
                    f"/api/models/{name}/config", json={"model": str(tmp_path / "bogus.gguf"), "args": args}
                ),
                api.post(f"/api/models/{name}/preview", json={"args": args}),
            ):
                assert r.status_code == 400, (args, r.text)
                error = r.json()["error"]
                assert error["code"] == "invalid_input" and flag in error["message"], error
                assert error["details"]["flag"] == flag, error
                if says:
                    assert error["details"]["engine_says"] == says, error
        # the CLI, a client of the running studio, gets the same refusal: a message and exit 2
        done = studio.cli(
            "models",
            "config",
            name,
            "--model",
            str(tmp_path / "bogus.gguf"),
            "--",
            "--top-k",
            "x",
            check=False,
        )
        assert done.returncode == 2 and "--top-k: expected a whole number, got 'x'" in done.stderr, done
        assert "Traceback" not in done.stderr
        # nothing was stored by the refusals
        assert api.get(f"/api/models/{name}/config").json()["config"]["args"] == [
            "-c",
            "768",
            "-np",
            "1",
            "--jinja",
        ]


def test_an_unclosed_quote_blocks_saving(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """An unclosed quote once saved an empty flag list silently."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "quote")
    studio.configure(name, model=str(tmp_path / "quote.gguf"), args=["-c", "512", "-np", "1"])
    _editor(pg, studio, name)
    line, save = pg.get_by_test_id("args-input"), pg.get_by_test_id("save-config")
    line.fill("-c 1024 -np 1 --alias 'my model")
    error = pg.get_by_test_id("args-error")
    expect(error).to_contain_text("unclosed ' quote (opened at character 23)")
    expect(save).to_be_disabled()
    expect(pg.locator("#ctx")).to_be_disabled()  # the fields are off while the line cannot be read
    expect(pg.get_by_test_id("preview-stale")).to_contain_text("last state that could be read")
    shot(pg, "editor-unclosed-quote")
    with studio.api() as api:
        assert api.get(f"/api/models/{name}/config").json()["config"]["args"] == ["-c", "512", "-np", "1"]
    line.fill("-c 1024 -np 1 --alias 'my model'")
    expect(error).to_have_count(0)
    expect(pg.get_by_test_id("command-preview")).to_contain_text("-c 1024")
    save.click()
    expect(pg.get_by_test_id("config-editor")).to_have_count(0)
    with studio.api() as api:
        saved = api.get(f"/api/models/{name}/config").json()["config"]["args"]
    assert saved == ["-c", "1024", "-np", "1", "--alias", "my model"]


def test_the_preview_is_stale_until_the_answer_for_the_last_change(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """The old preview and check mark stayed up ~1 s after each change; and an answer for an
    older state that lands last must not replace the newer one."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "stale")
    preview = _editor(pg, studio, name)
    box, stale = pg.get_by_test_id("preview"), pg.get_by_test_id("preview-stale")
    line = pg.get_by_test_id("args-input")
    line.fill("-c 512 -np 1")
    expect(preview).to_contain_text("-c 512")
    expect(box).to_have_attribute("data-stale", "false")
    expect(stale).to_have_count(0)

    held: list[Any] = []  # the answer for "-c 1024" is held back until "-c 2048" has landed

    def route(r: Any) -> None:
        if '"1024"' in (r.request.post_data or ""):
            held.append(r)
        else:
            r.continue_()

    pg.route("**/preview", route)
    line.fill("-c 1024 -np 1")
    expect(box).to_have_attribute("data-stale", "true")  # from the keystroke on
    expect(stale).to_contain_text("re-estimating")
    expect(box).to_have_css("opacity", "0.45")
    pg.wait_for_timeout(600)
    assert held, "the preview for -c 1024 was asked"
    expect(stale).to_be_visible()  # its answer has not come: still stale
    expect(pg.get_by_test_id("estimate-CPU")).not_to_contain_text("✓")  # no check mark for an old answer
    box.scroll_into_view_if_needed()
    pg.screenshot(path=str(SHOTS / "editor-stale.png"))  # the dialog scrolled to it
    line.fill("-c 2048 -np 1")
    expect(preview).to_contain_text("-c 2048")
    expect(stale).to_have_count(0)
    expect(box).to_have_attribute("data-stale", "false")
    expect(pg.get_by_test_id("estimate-CPU")).to_contain_text("CPU ✓")
    with pg.expect_response(lambda r: r.url.endswith("/preview")):
        held[0].continue_()  # the older answer lands last ...
    pg.wait_for_timeout(300)
    expect(preview).to_contain_text("-c 2048")  # ... and is ignored
    expect(preview).not_to_contain_text("-c 1024")
    pg.unroute("**/preview")


def test_context_above_the_trained_length_needs_the_override(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """2 M context on a model trained for 4,096 tokens got no warning at all."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "ctxcap")
    _editor(pg, studio, name)
    line, save = pg.get_by_test_id("args-input"), pg.get_by_test_id("save-config")
    line.fill("-c 2000000 -np 1")
    check = pg.get_by_test_id("check-ctx")
    expect(check).to_contain_text("above the trained 4,096")
    expect(check).to_have_class(re.compile(r"\berror\b"))
    expect(save).to_be_disabled()
    expect(pg.get_by_test_id("save-blocked")).to_contain_text("Context")
    shot(pg, "editor-ctx-cap")
    pg.get_by_label("allow beyond trained context (RoPE scaling)").check()
    expect(check).to_have_class(re.compile(r"\bwarn\b"))  # allowed, still cautioned
    line.fill("-c 16384 -np 1 --rope-scaling yarn")
    expect(check).to_have_count(0)  # scaled: nothing to caution about
    expect(save).to_be_enabled()
    expect(pg.get_by_test_id("command-preview")).to_contain_text("-c 16384")
    save.click()
    expect(pg.get_by_test_id("config-editor")).to_have_count(0)
    with studio.api() as api:
        assert api.get(f"/api/models/{name}/config").json()["config"]["args"][:2] == ["-c", "16384"]
    # reopened: a stored context beyond the trained one was chosen, the override starts ticked
    _editor(pg, studio, name)
    expect(pg.get_by_label("allow beyond trained context (RoPE scaling)")).to_be_checked()
    expect(pg.get_by_test_id("save-config")).to_be_enabled()


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_save_keeps_a_running_model_and_save_and_reload_restarts_it(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """Saving once did not touch a running model and did not say so."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "reload")
    studio.configure(name, model=str(tmp_path / "reload.gguf"), args=["-c", "512", "-np", "1"])
    with studio.api() as api:
        assert api.post(f"/api/models/{name}/start").status_code == 200
    pid = studio.status(name)["pid"]
    assert "512" in _cmdline(pid)
    try:
        _editor(pg, studio, name)
        expect(pg.get_by_test_id("running-note")).to_contain_text("Save keeps its old flags until reloaded")
        line = pg.get_by_test_id("args-input")
        line.fill("-c 1024 -np 1")
        expect(pg.get_by_test_id("command-preview")).to_contain_text("-c 1024")
        pg.get_by_test_id("save-config").click()
        kept = pg.get_by_test_id("saved-kept-running")
        expect(kept).to_contain_text("still running with its old flags")
        expect(pg.get_by_test_id("reload-model")).to_be_visible()
        kept.scroll_into_view_if_needed()
        pg.screenshot(path=str(SHOTS / "editor-saved-kept-running.png"))  # the dialog scrolled to it
        assert studio.status(name)["pid"] == pid and studio.status(name)["state"] == "ready"
        assert "1024" not in _cmdline(pid)  # the running instance has its old flags

        line.fill("-c 1536 -np 1")
        expect(kept).to_have_count(0)
        expect(pg.get_by_test_id("command-preview")).to_contain_text("-c 1536")
        pg.get_by_test_id("save-reload").click()
        expect(pg.get_by_test_id("config-editor")).to_have_count(0, timeout=90_000)
        status = studio.status(name)
        assert status["state"] == "ready" and status["pid"] != pid, status
        argv = _cmdline(status["pid"])
        assert argv[argv.index("-c") + 1] == "1536", argv
    finally:
        with studio.api() as api:
            api.post(f"/api/models/{name}/stop")


def test_ttl_empty_says_default_and_bad_values_are_inline_errors(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """An empty TTL said "saved" silently."""
    pg = page
    name = _model(studio, tiny_models["llama"], tmp_path, "ttl")
    _editor(pg, studio, name)
    ttl, save = pg.get_by_test_id("ttl-input"), pg.get_by_test_id("save-config")
    hint = pg.get_by_test_id("ttl-hint")
    expect(hint).to_have_text("the default (never unloaded)")  # the studio's LLAMASTUDIO_DEFAULT_TTL=0
    ttl.fill("-1")
    expect(pg.get_by_test_id("ttl-error")).to_contain_text("at least 0")
    expect(save).to_be_disabled()
    expect(pg.get_by_test_id("save-blocked")).to_contain_text("TTL")
    ttl.fill("soon")
    expect(pg.get_by_test_id("ttl-error")).to_contain_text('"soon" is not a number of seconds')
    save.scroll_into_view_if_needed()
    pg.screenshot(path=str(SHOTS / "editor-ttl-error.png"))  # the dialog scrolled to it
    ttl.fill("90")
    expect(hint).to_have_text("unloaded after 90 s idle")
    expect(save).to_be_enabled()
    ttl.fill("")
    expect(hint).to_have_text("the default (never unloaded)")
    expect(pg.get_by_test_id("preview")).to_have_attribute("data-stale", "false")
    save.click()
    expect(pg.locator(".p-toast-message")).to_contain_text("TTL: the default (never unloaded)")
    with studio.api() as api:
        assert api.get(f"/api/models/{name}/config").json()["config"]["ttl"] is None
