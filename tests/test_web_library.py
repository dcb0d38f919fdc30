"""Issue 12 #5 (Library part) in a real browser: the quantizations of one repo are one row with
each quant's size and fit, configurations are imported (a llama-swap YAML file, with the keys the
studio ignores listed) and exported (files that parse) from the Library's toolbar, and the rows are
cards with every action on screen at phone width.

Real parts: ``llamastudio serve`` with the local Hub-compatible server (two quants of
``tiny/Llama-GGUF`` downloaded through the studio), the rig's llama-server, Debian chromium."""

from __future__ import annotations

import configparser
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rig.studio import Studio
from tests.rig.web import CHROMIUM, REPO, SHOTS, _page, shot

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
expect = playwright_api.expect
QUANTS = ("Q8_0", "Q4_K_M")


def _download_both(studio: Studio) -> list[str]:
    """Both quants of the Hub repo downloaded through the studio; their served names."""
    with studio.api() as api:
        jobs = []
        for quant in QUANTS:
            r = api.post("/api/downloads", json={"repo": REPO, "quant": quant})
            assert r.status_code == 201, r.text
            jobs.append(r.json()["id"])
        deadline = time.monotonic() + 120
        for job_id in jobs:
            while (job := api.get(f"/api/downloads/{job_id}").json())["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["state"] == "done", job
        names = {m["id"] for m in api.get("/api/models").json()}
    expected = [f"{REPO}:{q}" for q in QUANTS]
    assert set(expected) <= names, names
    return expected


@pytest.fixture(scope="module")
def quants(studio: Studio) -> list[str]:
    return _download_both(studio)


def test_quants_of_one_repo_are_one_row_with_each_quants_size_and_fit(
    page: Any, studio: Studio, quants: list[str]
) -> None:
    pg = page
    pg.goto(f"{studio.api_url}/library")
    group = pg.get_by_test_id(f"group-{REPO}")
    expect(group.locator("tr.group")).to_have_count(1)  # one row for the repo ...
    expect(group.locator("tr.group")).to_contain_text("2 quants")
    expect(group.locator("tr.group td[data-label=Quants]")).to_have_text(
        re.compile(r"^(Q8_0 · Q4_K_M|Q4_K_M · Q8_0)$")
    )
    expect(pg.get_by_test_id(f"group-fit-{REPO}")).to_have_text("fits (CPU)")  # the rig has no GPU
    for name in quants:
        expect(pg.get_by_test_id(f"row-{name}")).to_have_count(0)  # ... folded
    toggle = pg.get_by_test_id(f"group-toggle-{REPO}")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    with studio.api() as api:
        sizes = {m["id"]: m["size"] for m in api.get("/api/models").json()}
        served = {m["name"]: m for m in api.get("/api/served").json()}
    for name in quants:
        row = pg.get_by_test_id(f"row-{name}")
        expect(row).to_be_visible()
        fit = pg.get_by_test_id(f"fit-{name}")
        expect(fit).to_have_text("fits (CPU)")
        expect(fit).to_have_attribute("data-fit", "cpu")
        mib = served[name]["memory"]["CPU"] / 2**20
        assert served[name]["memory"]["CPU"] > 0
        expect(row.locator("td[data-label=Size]")).to_have_text(f"{sizes[name] / 2**20:.1f} MiB")
        fit.hover()
        expect(pg.locator(".p-tooltip")).to_contain_text(f"reserves CPU: {mib:.1f} MiB of")
    expect(pg.get_by_test_id(f"row-{quants[0]}")).not_to_have_text(
        pg.get_by_test_id(f"row-{quants[1]}").inner_text()
    )
    shot(pg, "library-grouped")
    toggle.click()
    expect(pg.get_by_test_id(f"row-{quants[0]}")).to_have_count(0)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_phone_width_library_is_cards_with_actions_on_screen(
    browser: Any, studio: Studio, quants: list[str], scheme: str
) -> None:
    with _page(browser, 390, 844, scheme) as pg:
        pg.goto(f"{studio.api_url}/library")
        pg.get_by_test_id(f"group-toggle-{REPO}").click()
        expect(pg.get_by_test_id(f"row-{quants[0]}")).to_be_visible()
        scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"the page is {scroll}px wide at {inner}px"
        for name in quants:
            for action in ("start", "configure", "delete"):
                button = pg.get_by_test_id(f"{action}-{name}")
                button.scroll_into_view_if_needed()
                box = button.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= inner, (action, name, box)
        for tid in ("import-configs", "export-llama-swap", "export-preset", "add-foreign"):
            box = pg.get_by_test_id(tid).bounding_box()
            assert box and box["x"] + box["width"] <= inner, (tid, box)
        pg.screenshot(path=str(SHOTS / f"library-390-{scheme}.png"), full_page=True)


def test_import_a_llama_swap_yaml_and_export_files_that_parse(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    pg = page
    doc = tmp_path / "config.yaml"
    doc.write_text(
        "startPort: 9000\n"
        "models:\n"
        f"  swapped:\n    cmd: llama-server -m {tiny_models['llama']} --port ${{PORT}} -c 512\n"
        "    aliases: [swap-alias]\n"
    )
    pg.goto(f"{studio.api_url}/library")
    pg.get_by_test_id("import-configs").click()
    pg.get_by_test_id("import-file").set_input_files(str(doc))
    expect(pg.get_by_test_id("import-text")).to_have_value(doc.read_text())
    pg.get_by_test_id("import-run").click()
    expect(pg.get_by_test_id("import-result")).to_contain_text("Imported 1: swapped")
    ignored = pg.get_by_test_id("import-ignored")
    expect(ignored).to_contain_text("startPort")
    expect(ignored).to_contain_text("the studio picks a free port")
    pg.wait_for_timeout(400)  # the messages' entrance animation
    shot(pg, "library-import")
    pg.locator(".p-dialog-close-button").click()
    expect(pg.get_by_test_id("row-swapped")).to_contain_text("swap-alias")
    with studio.api() as api:
        cfg = api.get("/api/models/swapped/config").json()["config"]
    assert cfg["args"] == ["-c", "512"] and cfg["aliases"] == ["swap-alias"], cfg

    bad = tmp_path / "bad.yaml"  # a refusal stays in the dialog, nothing imported
    bad.write_text("models: {broken: {cmd: 3}}\n")
    pg.get_by_test_id("import-configs").click()
    pg.get_by_test_id("import-file").set_input_files(str(bad))
    pg.get_by_test_id("import-run").click()
    expect(pg.get_by_test_id("import-error")).to_contain_text("model 'broken'")
    pg.locator(".p-dialog-close-button").click()

    with pg.expect_download() as got:
        pg.get_by_test_id("export-llama-swap").click()
    exported = got.value
    assert exported.suggested_filename == "llamastudio-llama-swap.yaml"
    data = yaml.safe_load(Path(exported.path()).read_text())
    assert "swapped" in data["models"], data
    assert "-c 512" in data["models"]["swapped"]["cmd"]

    with pg.expect_download() as got:
        pg.get_by_test_id("export-preset").click()
    assert got.value.suggested_filename == "llamastudio-presets.ini"
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string("[top]\n" + Path(got.value.path()).read_text())  # global keys (version = 1) come first
    assert "swapped" in ini.sections(), ini.sections()


def test_lm_studio_models_are_added_in_place_from_the_library(
    page: Any, studio: Studio, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """M-peers' route (``/api/library/foreign``) in the Library's add dialog: look, then add all."""
    pg = page
    root = tmp_path / "lmstudio" / "models"
    (root / "tiny-pub" / "tiny-repo-GGUF").mkdir(parents=True)
    gguf = root / "tiny-pub" / "tiny-repo-GGUF" / "tiny-lm.gguf"
    os.link(tiny_models["llama"], gguf)
    pg.goto(f"{studio.api_url}/library")
    pg.get_by_test_id("add-foreign").click()
    dialog = pg.get_by_test_id("foreign-dialog")
    dialog.locator(".p-select").click()
    pg.get_by_role("option", name="LM Studio").click()
    dialog.get_by_label("Store directory").fill(str(root))
    pg.get_by_test_id("foreign-preview").click()
    expect(pg.get_by_test_id("foreign-models")).to_contain_text("lmstudio/tiny-pub/tiny-lm")
    with studio.api() as api:  # a look stores nothing
        assert "lmstudio/tiny-pub/tiny-lm" not in {m["name"] for m in api.get("/api/served").json()}
    pg.get_by_test_id("foreign-add").click()
    expect(dialog).to_contain_text("Added 1 in place")
    pg.locator(".p-dialog-close-button").click()
    expect(pg.get_by_test_id("row-lmstudio/tiny-pub/tiny-lm")).to_be_visible()
    with studio.api() as api:
        cfg = api.get("/api/models/lmstudio/tiny-pub/tiny-lm/config").json()["config"]
    assert cfg["model"] == str(gguf)  # in place: the store's own file
