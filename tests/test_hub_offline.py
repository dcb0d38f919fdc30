"""Issue 12: a Hub that cannot be reached is said within seconds, with a specific code and what to
check, in the API and where the user looks in the browser (inline, with a Retry), and a download
that loses the Hub fails with that reason, visibly, and can be retried.

Before: a search spun 21–23 s (huggingface_hub's five retries), then a toast ``internal error:
ConnectError`` vanished after 8 s. One studio here points ``HF_ENDPOINT`` at a port that is, in
turn, closed (connection refused), a blackhole (accepts, never answers) and a real Hub-compatible
server (``tests/rig/hub.py``), so each state is the same endpoint seen by the same studio.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamastudio.engines.registry import Engine
from llamastudio.engines.releases import GitHubReleases, updates
from llamastudio.errors import HubUnreachable
from llamastudio.hub import download
from llamastudio.runtime.process import free_port
from tests.rig.hub import HubServer, Repo
from tests.rig.serving import running
from tests.rig.studio import Studio
from tests.rig.web import REPO, SHOTS, _page, _playwright

BOUND = 5.0  # seconds: the "within a few seconds" (connect timeout 3 s, API answers 4 s)


def shot(pg: Any, name: str) -> None:
    """A screenshot with the messages' entry animations finished."""
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


@contextmanager
def blackhole(port: int) -> Iterator[None]:
    """A server on ``port`` that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", port), reuse_port=False)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


class _Hub(HubServer):
    """The Hub-compatible server whose connections all close when it stops (its handler threads
    would otherwise keep serving the studio's pooled keep-alive connections: a Hub still there)."""

    def __init__(self, port: int) -> None:
        super().__init__(port=port)
        self.connections: list[socket.socket] = []

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.append(request)
        super().process_request(request, client_address)

    def close_connections(self) -> None:
        for conn in self.connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@contextmanager
def hub_on(port: int, repo: Repo) -> Iterator[HubServer]:
    """The Hub-compatible server, on ``port``: the Hub is back, until the block ends."""
    server = _Hub(port)
    server.add_repo(repo)
    try:
        with running(server):
            yield server
    finally:
        server.close_connections()


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def offline(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], endpoint: str
) -> Iterator[Studio]:
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_XET": "1"}
    with Studio(tmp_path_factory.mktemp("offline"), rig_bin("llama-server"), env=env) as studio:
        yield studio


@pytest.fixture(scope="module")
def repo(tiny_models: dict[str, Path]) -> Repo:
    return Repo(REPO, {"llama-Q8_0.gguf": tiny_models["llama-Q8_0"]}, downloads=10, likes=1)


CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/hub/search?q=qwen", None),
    ("GET", "/api/hub/repos/org/model-GGUF/quants", None),
    ("POST", "/api/downloads", {"repo": "org/model-GGUF", "quant": "Q4_K_M"}),
]


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code and error["source"] == "studio", error
    return error


def test_a_closed_port_is_hub_unreachable_within_seconds(offline: Studio, endpoint: str) -> None:
    with offline.api() as api:
        for method, path, body in CALLS:
            started = time.monotonic()
            error = _error(api.request(method, path, json=body), 502, "hub_unreachable")
            took = time.monotonic() - started
            assert error["message"].startswith(f"the Hugging Face Hub at {endpoint} is unreachable: ")
            for advice in ("network connection", "HTTPS_PROXY", "HF_ENDPOINT"):
                assert advice in error["message"], error["message"]
            assert error["details"] == {"endpoint": endpoint}
            assert took < BOUND, f"{path}: {took:.1f} s"


def test_a_blackhole_is_hub_timeout_within_seconds(offline: Studio, endpoint: str, port: int) -> None:
    """Accepted, never answered: the default 4 s for an answer, not huggingface_hub's none."""
    with blackhole(port), offline.api() as api:
        for method, path, body in CALLS:
            started = time.monotonic()
            error = _error(api.request(method, path, json=body), 504, "hub_timeout")
            took = time.monotonic() - started
            assert error["message"].startswith(
                f"the Hugging Face Hub at {endpoint} did not answer in time (no answer within 4 s). "
            )
            assert "HF_ENDPOINT" in error["message"]
            assert took < BOUND, f"{path}: {took:.1f} s"


def test_a_transfer_that_cannot_reconnect_is_hub_unreachable(tmp_path: Path, endpoint: str) -> None:
    """The download's own transfer (after its retries) names the Hub and keeps the partial data."""
    partial = tmp_path / "blob.incomplete"
    partial.write_bytes(b"x" * 10)
    url = f"{endpoint}/org/model-GGUF/resolve/main/m.gguf"
    with pytest.raises(HubUnreachable) as caught:
        download._fetch_ranges(url, None, partial, 100, "m.gguf", lambda *_: None, None, retries=0)
    message = caught.value.message
    assert message.startswith(f"the Hugging Face Hub at {endpoint} is unreachable while downloading m.gguf: ")
    assert message.endswith("the partial data is kept: resume the download to continue")
    assert partial.read_bytes() == b"x" * 10


def test_search_offline_is_said_in_the_page_with_a_retry(
    browser: Any, offline: Studio, endpoint: str, port: int, repo: Repo
) -> None:
    expect = _playwright().expect
    with _page(browser) as pg:
        pg.goto(f"{offline.api_url}/search")
        pg.get_by_test_id("search-input").fill("llama")
        started = time.monotonic()
        pg.get_by_test_id("search-button").click()
        error = pg.get_by_test_id("search-error")
        expect(error).to_contain_text("The Hugging Face Hub is unreachable", timeout=BOUND * 1000)
        took = time.monotonic() - started
        assert took < BOUND, f"{took:.1f} s"
        expect(error).to_contain_text(f"the Hugging Face Hub at {endpoint} is unreachable")
        expect(error).to_contain_text("HF_ENDPOINT")
        expect(pg.locator(".p-toast-message")).to_have_count(0)  # in the page, not a toast that vanishes
        retry = pg.get_by_test_id("search-retry")
        expect(retry).to_be_visible()
        shot(pg, "search-hub-unreachable")

        with blackhole(port):
            retry.click()
            expect(error).to_contain_text("The Hugging Face Hub did not answer in time", timeout=BOUND * 1000)
            shot(pg, "search-hub-timeout")

        with hub_on(port, repo):  # the Hub is back: Retry finds it
            retry.click()
            expect(pg.get_by_test_id("results")).to_contain_text(REPO)
            expect(error).to_have_count(0)

        pg.get_by_text(REPO, exact=True).click()  # the Hub gone again: the repo's quants say so
        quants_error = pg.get_by_test_id("quants-error")
        expect(quants_error).to_contain_text("The Hugging Face Hub is unreachable", timeout=BOUND * 1000)
        expect(pg.get_by_test_id("quants-retry")).to_be_visible()


def _wait_state(api: httpx.Client, job_id: str, *states: str) -> dict[str, Any]:
    for _ in range(300):
        job: dict[str, Any] = api.get(f"/api/downloads/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"download {job_id} is {job['state']}, not {states}")


def test_a_download_that_loses_the_hub_fails_visibly_and_is_retried(
    browser: Any, offline: Studio, endpoint: str, port: int, repo: Repo
) -> None:
    expect = _playwright().expect
    with offline.api() as api:
        with hub_on(port, repo) as hub:
            hub.throttle = 0.2  # slow enough to pause it on the way
            r = api.post("/api/downloads", json={"repo": REPO, "quant": "Q8_0"})
            assert r.status_code in (200, 201), r.text
            job_id = r.json()["id"]
            assert api.post(f"/api/jobs/{job_id}/pause").status_code == 200
            _wait_state(api, job_id, "paused")
        # the Hub is gone: resumed, the download fails at once, saying why
        assert api.post(f"/api/jobs/{job_id}/resume").status_code == 200
        failed = _wait_state(api, job_id, "failed")
        assert f"the Hugging Face Hub at {endpoint} is unreachable" in failed["error"], failed

    with _page(browser, 390, 844) as pg:
        pg.goto(f"{offline.api_url}/downloads")
        card = pg.locator("[data-testid=download-job][data-state=failed]").first
        expect(card.get_by_test_id("download-failure")).to_contain_text(
            f"the Hugging Face Hub at {endpoint} is unreachable"
        )
        retry = card.get_by_test_id("download-resume")
        expect(retry).to_have_text("Retry")
        shot(pg, "downloads-hub-unreachable-390")
        with hub_on(port, repo):
            retry.click()
            done = pg.locator("[data-testid=download-job][data-state=done]").first
            expect(done.get_by_test_id("download-state")).to_have_text("done", timeout=30_000)
            expect(done.get_by_test_id("download-failure")).to_have_count(0)


def test_an_update_check_that_fails_says_why(tmp_path: Path, endpoint: str) -> None:
    """Issue 12: "Check for updates" showed `→ —` when GitHub or a git remote was unreachable."""
    release = Engine(id="r", name="r", kind="release", root=str(tmp_path), binaries={}, version="b1")
    gone = tmp_path / "no-such-repo"
    source = Engine(
        id="s",
        name="s",
        kind="source",
        root=str(tmp_path),
        binaries={},
        source={"kind": "git", "location": str(gone)},
    )
    started = time.monotonic()
    rows = updates(GitHubReleases(endpoint, "ggml-org/llama.cpp"), [release, source])
    assert time.monotonic() - started < BOUND
    by_id = {row["engine"]: row for row in rows}
    assert by_id["r"]["latest"] is None and by_id["r"]["update"] is False
    assert by_id["r"]["error"].startswith(f"GitHub's API at {endpoint} is unreachable"), by_id["r"]
    assert "LLAMASTUDIO_GITHUB_API" in by_id["r"]["error"]
    assert by_id["s"]["latest"] is None
    assert by_id["s"]["error"].startswith(f"git ls-remote {gone}: "), by_id["s"]


def test_an_engine_with_nothing_to_check_says_so(tmp_path: Path) -> None:
    external = Engine(id="x", name="x", kind="external", root=str(tmp_path), binaries={}, version="b1")
    local = Engine(id="l", name="l", kind="source", root=str(tmp_path), binaries={}, source={"kind": "dir"})
    rows = {row["engine"]: row for row in updates(None, [external, local])}
    assert rows["x"]["note"] == "registered from this machine: its updates are its own"
    assert rows["l"]["note"] == "built from a local directory: no upstream to check"
    assert all(row["error"] is None and row["latest"] is None for row in rows.values())
