"""Browser-test fixtures shared by the ``tests/test_web*.py`` modules: a local Hub-compatible
server with the tiny Llama GGUF, a real ``llamastudio serve`` (module-scoped), Debian chromium via
Playwright, and a page that fails the test on any uncaught exception in the app.

Screenshots go to ``test-output/screenshots/`` (not committed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.rig.hub import HubServer, Repo, hub_server
from tests.rig.studio import Studio

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
REPO = "tiny/Llama-GGUF"


@pytest.fixture(scope="module")
def hub(tiny_models: dict[str, Path]) -> Iterator[HubServer]:
    with hub_server() as srv:
        srv.add_repo(
            Repo(
                REPO,
                {
                    "llama-Q8_0.gguf": tiny_models["llama-Q8_0"],
                    "llama-Q4_K_M.gguf": tiny_models["llama-Q4_K_M"],
                },
                downloads=1234,
                likes=7,
            )
        )
        yield srv


@pytest.fixture(scope="module")
def studio(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], hub: HubServer
) -> Iterator[Studio]:
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "LLAMASTUDIO_DEFAULT_TTL": "0",
        "LLAMASTUDIO_ALLOW_COMMANDS": "1",  # the engines view builds from a local directory
    }
    with Studio(tmp_path_factory.mktemp("web"), rig_bin("llama-server"), env=env) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _playwright().sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: object, studio: Studio) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.on("dialog", lambda d: d.accept())
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught exception in the app


def shot(pg: object, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


@contextmanager
def _page(browser: Any, width: int = 1440, height: int = 900, scheme: str = "light") -> Iterator[Any]:
    """A page of a fresh browser context; no uncaught exception in the app by the end."""
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    errors: list[str] = []
    try:
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
    finally:
        context.close()
    assert not errors, errors


def _playwright() -> Any:
    return pytest.importorskip("playwright.sync_api")
