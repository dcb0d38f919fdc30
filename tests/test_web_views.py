"""Issue 12 acceptance, every view of the web UI at 1440×900 and 390×844, light and dark: no page
wider than the viewport, and every visible action button on screen after scrolling vertically only
(none off to the side in a table that scrolls sideways). The studio is seeded so that the tables
have rows: a model configuration that runs, a finished download, an engine registered.

Screenshots: ``test-output/screenshots/<view>-<width>-<scheme>.png`` (not committed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rig.hub import HubServer
from tests.rig.studio import Studio
from tests.rig.web import CHROMIUM, REPO, SHOTS, _page, _playwright

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")

MODEL = "views-llama"
SIZES = [(1440, 900), (390, 844)]
SCHEMES = ["light", "dark"]

# every element a user acts on: PrimeVue buttons, plain buttons, links styled as buttons
OFF_SCREEN_ACTIONS = """() => {
  const width = window.innerWidth
  const seen = new Set(), out = []
  for (const el of document.querySelectorAll('button, a[role=button], .p-button')) {
    if (seen.has(el)) continue
    seen.add(el)
    const r = el.getBoundingClientRect(), style = getComputedStyle(el)
    if (!r.width || !r.height || style.visibility === 'hidden' || el.closest('[aria-hidden=true]')) continue
    if (r.left < -0.5 || r.right > width + 0.5) {
      const name = (el.getAttribute('aria-label') || el.innerText || el.className).trim().slice(0, 40)
      out.push(`${el.getAttribute('data-testid') || name} [${Math.round(r.left)}, ${Math.round(r.right)}]`)
    }
  }
  return out
}"""


@pytest.fixture(scope="module")
def seeded(
    studio: Studio, hub: HubServer, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Studio:
    """A running model (its configuration), a finished download, the rig's engine (registered
    from LLAMASTUDIO_LLAMA_SERVER) and a failed build job."""
    broken = tmp_path_factory.mktemp("not-llama")
    (broken / "README").write_text("not a llama.cpp tree")
    with studio.api() as api:
        assert api.get("/api/engines").json(), "the rig's engine is registered"
        r = api.post("/api/engines/build", json={"source": str(broken), "name": "broken"})
        assert r.status_code == 202, r.text
        r = api.post("/api/downloads", json={"repo": REPO, "quant": "Q4_K_M"})
        assert r.status_code in (200, 201), r.text
        download = r.json()["id"]
        studio.configure(MODEL, model=str(tiny_models["llama"]), args=["-c", "512", "-np", "1"])
        r = api.post(f"/api/models/{MODEL}/start")
        assert r.status_code in (200, 202), r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = api.get(f"/api/downloads/{download}").json()["state"]
            if state in ("done", "failed") and studio.status(MODEL)["state"] in ("ready", "failed"):
                break
            time.sleep(0.2)
        assert state == "done", state
        assert studio.status(MODEL)["state"] == "ready", studio.status(MODEL)
    return studio


def _search(pg: Any) -> None:
    pg.get_by_test_id("search-input").fill("llama")
    pg.get_by_test_id("search-button").click()
    pg.get_by_text(REPO, exact=True).click()
    _playwright().expect(pg.get_by_test_id("fit-badge")).to_have_count(2)


def _editor(pg: Any) -> None:
    pg.get_by_test_id(f"configure-{MODEL}").click()
    _playwright().expect(pg.get_by_test_id("estimate")).to_be_visible()


def _playground(pg: Any) -> None:
    """The chat of the running model: its controls, not the empty card."""
    pg.get_by_test_id("chat-model").click()
    pg.get_by_role("option", name=MODEL, exact=True).click()
    pg.get_by_test_id("playground").scroll_into_view_if_needed()


def _ready(selector: str) -> Callable[[Any], None]:
    return lambda pg: _playwright().expect(pg.locator(selector).first).to_be_visible()


# view name → (path, what to do once it shows before looking)
VIEWS: dict[str, tuple[str, Callable[[Any], None]]] = {
    "dashboard": ("/", _ready("[data-testid=cpu]")),
    "search": ("/search", _search),
    "downloads": ("/downloads", _ready("[data-testid=download-job]")),
    "library": ("/library", _ready(f"[data-testid=configure-{MODEL}]")),
    "running": ("/running", _ready(f"[data-testid=state-{MODEL}]")),
    "engines": ("/engines", _ready("h2")),
    "settings": ("/settings", _ready("[data-testid=token-state]")),
    "not-found": ("/no/such/page", _ready("[data-testid=not-found]")),
    "editor": ("/library", _editor),
    "playground": ("/running", _playground),
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}" for w, _ in SIZES])
@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_fits_and_shows_its_actions(
    browser: Any, seeded: Studio, view: str, width: int, height: int, scheme: str
) -> None:
    path, prepare = VIEWS[view]
    with _page(browser, width, height, scheme) as pg:
        pg.goto(f"{seeded.api_url}{path}")
        pg.wait_for_selector("h2")
        prepare(pg)
        pg.wait_for_timeout(300)  # layout after the data landed
        dark = "app-dark" in (pg.locator("html").get_attribute("class") or "")
        assert dark == (scheme == "dark"), "the color scheme follows the system's"
        pg.screenshot(path=str(SHOTS / f"{view}-{width}-{scheme}.png"), full_page=True, animations="disabled")
        scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"/{view} {width}px {scheme}: the page is {scroll}px wide"
        off = pg.evaluate(OFF_SCREEN_ACTIONS)
        assert not off, f"{view} {width}px {scheme}: actions off screen: {off}"


def test_the_phone_menu_reaches_every_view(browser: Any, seeded: Studio) -> None:
    """At 390 px the nav is a menu: every view's link is on screen once it is open."""
    expect = _playwright().expect
    with _page(browser, 390, 844) as pg:
        pg.goto(seeded.api_url)
        pg.wait_for_selector("h2")
        names = ["Dashboard", "Search", "Downloads", "Library", "Running", "Engines", "Settings"]
        expect(pg.locator("[data-nav=Settings]")).to_be_hidden()  # folded away: the page first
        for name in names:
            pg.get_by_test_id("menu-toggle").click()
            link = pg.locator(f"[data-nav={name}]")
            expect(link).to_be_visible()
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
            link.click()
            expect(link).to_be_hidden()  # the menu closes on navigating
            expect(pg.locator("h2").first).to_be_visible()
        pg.get_by_test_id("menu-toggle").click()
        pg.screenshot(path=str(SHOTS / "menu-390-light.png"), animations="disabled")


def test_unknown_routes_get_a_page_with_a_way_home(browser: Any, seeded: Studio) -> None:
    expect = _playwright().expect
    with _page(browser) as pg:
        pg.goto(f"{seeded.api_url}/no/such/page?x=1")
        page = pg.get_by_test_id("not-found")
        expect(page).to_contain_text("Page not found")
        expect(page).to_contain_text("/no/such/page?x=1")
        pg.get_by_test_id("home-link").click()
        expect(pg.get_by_test_id("cpu")).to_be_visible()  # the dashboard
        assert pg.url.rstrip("/") == seeded.api_url


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser: Any, seeded: Studio, path: str) -> None:
    """Swagger UI and ReDoc are served by the studio (the browser here reaches no other host):
    every request the page makes goes to the studio, and the operations render."""
    expect = _playwright().expect
    with _page(browser) as pg:
        elsewhere: list[str] = []
        local = (seeded.api_url, "blob:", "data:")  # ReDoc's search worker runs from a blob: URL
        pg.on("request", lambda r: elsewhere.extend([] if r.url.startswith(local) else [r.url]))
        pg.goto(f"{seeded.api_url}{path}")
        if path == "/docs":
            expect(pg.locator(".opblock-summary-path").first).to_be_visible()
            expect(pg.locator(".opblock")).not_to_have_count(0)
            expect(pg.locator("[data-path='/api/hub/search']").first).to_be_visible()
        else:
            expect(pg.locator("h1").first).to_contain_text("llama.cpp Studio")
            expect(pg.get_by_text("/api/hub/search").first).to_be_attached()
        pg.screenshot(path=str(SHOTS / f"api{path.replace('/', '-')}.png"), animations="disabled")
        assert not elsewhere, elsewhere


def test_api_docs_pages_name_only_local_assets(seeded: Studio) -> None:
    with seeded.api() as api:
        for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            page = api.get(path)
            assert page.status_code == 200 and f'src="/docs-assets/{asset}"' in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "http" not in page.text.replace(seeded.api_url, ""), page.text  # no other host
            script = api.get(f"/docs-assets/{asset}")
            assert script.status_code == 200 and len(script.content) > 100_000


def test_check_for_updates_says_why_there_is_nothing_to_compare(browser: Any, seeded: Studio) -> None:
    """Issue 12: "Check for updates" answered `→ —`; the rig's engine is registered from this
    machine, and the row says so."""
    expect = _playwright().expect
    with _page(browser, 390, 844) as pg:
        pg.goto(f"{seeded.api_url}/engines")
        pg.get_by_role("button", name="Check for updates").click()
        row = pg.locator("tr", has_text="registered from this machine: its updates are its own")
        expect(row).to_be_visible()
        expect(row).not_to_contain_text("→ —")
