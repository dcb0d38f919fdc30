"""The Hub, downloads, library and token through the REST API (local Hub-compatible server)."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import constants

from llamastudio.api.app import create_app
from llamastudio.config import Settings
from tests.rig.hub import HubServer, Repo, hub_server
from tests.test_api import CLIENT, assert_error_shape


@pytest.fixture
def hub(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    with hub_server() as srv:
        srv.add_repo(
            Repo(
                "tiny/llama-GGUF",
                {
                    "tiny-llama-F16.gguf": tiny_models["llama"],
                    "tiny-llama-Q8_0.gguf": tiny_models["llama-Q8_0"],
                },
            )
        )
        srv.add_repo(Repo("tiny/gated-GGUF", {"g-Q8_0.gguf": tiny_models["llama-Q8_0"]}, gated=True))
        use_hub(srv, monkeypatch, tmp_path)
        yield srv


def use_hub(srv: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point huggingface_hub and the studio at the local Hub, with no token and a fresh cache."""
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_API_KEY", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@contextlib.asynccontextmanager
async def studio_api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The management API in process, as the UI calls it."""
    app = create_app(Settings(data_dir=tmp_path / "data"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=CLIENT
    ) as client:
        yield client
    await app.state.studio.jobs.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with studio_api(tmp_path) as client:
        yield client


async def wait_for(
    api: httpx.AsyncClient, job_id: str, states: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = (await api.get(f"/api/downloads/{job_id}")).json()
        if job["state"] in states:
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


async def test_search_and_quants(hub: HubServer, api: httpx.AsyncClient) -> None:
    found = (await api.get("/api/hub/search", params={"q": "tiny"})).json()
    assert {r["id"] for r in found} == {"tiny/llama-GGUF", "tiny/gated-GGUF"}
    quants = (await api.get("/api/hub/repos/tiny/llama-GGUF/quants", params={"hardware": "24GiB"})).json()
    assert {q["quant"]: q["fit"] for q in quants["quants"]} == {"Q8_0": "full", "F16": "full"}
    assert_error_shape(await api.get("/api/hub/repos/tiny/nope/quants"), 404, "not_found")
    assert_error_shape(await api.get("/api/hub/search", params={"limit": 0}), 400, "invalid_input")


async def test_download_job_lifecycle(
    hub: HubServer, api: httpx.AsyncClient, tiny_models: dict[str, Path]
) -> None:
    resp = await api.post("/api/downloads", json={"repo": "tiny/llama-GGUF", "quant": "Q8_0"})
    assert resp.status_code == 201, resp.text
    job = await wait_for(api, resp.json()["id"], {"done", "failed"})
    assert job["state"] == "done" and job["progress"] == 1.0 and job["bytes_done"] == job["bytes_total"]
    assert Path(job["paths"][0]).read_bytes() == tiny_models["llama-Q8_0"].read_bytes()
    listed = (await api.get("/api/models")).json()
    assert [m["id"] for m in listed] == ["tiny/llama-GGUF:Q8_0"]

    hub.throttle = 0.01  # slow enough to pause mid-way
    resp = await api.post("/api/downloads", json={"repo": "tiny/llama-GGUF", "quant": "F16"})
    job_id = resp.json()["id"]
    await wait_for(api, job_id, {"running"})
    while (await api.get(f"/api/downloads/{job_id}")).json()["bytes_done"] < 1_000_000:
        await asyncio.sleep(0.05)
    assert (await api.post(f"/api/downloads/{job_id}/pause")).status_code == 200
    paused = await wait_for(api, job_id, {"paused"})
    assert paused["state"] == "paused"
    hub.throttle = 0.0
    assert (await api.post(f"/api/downloads/{job_id}/resume")).status_code == 200
    done = await wait_for(api, job_id, {"done", "failed"})
    assert done["state"] == "done", done
    assert_error_shape(await api.post(f"/api/downloads/{job_id}/pause"), 409, "conflict")
    assert_error_shape(await api.get("/api/downloads/nope"), 404, "not_found")
    assert_error_shape(await api.post("/api/downloads", json={"repo": "not a repo"}), 422, "invalid_input")


async def test_cancel_a_download_mid_way(hub: HubServer, api: httpx.AsyncClient) -> None:
    """Downloads are jobs of the one job system: the same job under /api/downloads and
    /api/jobs, cancelled between chunks by either."""
    hub.throttle = 0.01
    job_id = (await api.post("/api/downloads", json={"repo": "tiny/llama-GGUF", "quant": "F16"})).json()["id"]
    while (await api.get(f"/api/downloads/{job_id}")).json()["bytes_done"] < 500_000:
        await asyncio.sleep(0.05)
    generic = (await api.get(f"/api/jobs/{job_id}")).json()
    assert generic["kind"] == "download" and generic["state"] == "running"
    assert generic["progress"]["unit"] == "bytes" and generic["progress"]["done"] >= 500_000
    assert generic["pausable"] is True and generic["params"]["repo"] == "tiny/llama-GGUF"
    listed = (await api.get("/api/jobs", params={"kind": "download", "state": "running"})).json()
    assert [j["id"] for j in listed] == [job_id]
    assert (await api.get("/api/jobs", params={"kind": "build"})).json() == []
    assert (await api.post(f"/api/jobs/{job_id}/cancel")).status_code == 200
    cancelled = await wait_for(api, job_id, {"cancelled", "done", "failed"})
    hub.throttle = 0.0
    assert cancelled["state"] == "cancelled" and cancelled["error"] is None
    assert 500_000 <= cancelled["bytes_done"] < cancelled["bytes_total"]
    assert_error_shape(await api.post(f"/api/downloads/{job_id}/cancel"), 409, "conflict")
    resumed = (await api.post(f"/api/downloads/{job_id}/resume")).json()  # a cancelled one may restart
    assert resumed["state"] in ("queued", "running")
    assert (await wait_for(api, job_id, {"done", "failed"}))["state"] == "done"
    assert_error_shape(await api.get("/api/jobs/0123456789abcdef"), 404, "not_found")


async def test_gated_download_fails_with_a_reason(hub: HubServer, api: httpx.AsyncClient) -> None:
    job = (await api.post("/api/downloads", json={"repo": "tiny/gated-GGUF", "quant": "Q8_0"})).json()
    failed = await wait_for(api, job["id"], {"failed", "done"})
    assert failed["state"] == "failed" and "HF_TOKEN" in failed["error"]


async def test_token_is_write_only_and_0600(
    hub: HubServer, api: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await api.get("/api/settings/hf-token")).json() == {
        "set": False,
        "source": None,
        "read_only": False,
    }
    assert (await api.put("/api/settings/hf-token", json={"token": "hf_good"})).status_code == 204
    status = await api.get("/api/settings/hf-token")
    assert status.json() == {"set": True, "source": "settings", "read_only": False}
    assert "hf_good" not in status.text
    path = tmp_path / "data" / "hf_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    job = (await api.post("/api/downloads", json={"repo": "tiny/gated-GGUF", "quant": "Q8_0"})).json()
    assert (await wait_for(api, job["id"], {"failed", "done"}))["state"] == "done"  # the stored token is used
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert (await api.get("/api/settings/hf-token")).json()["read_only"] is True
    assert_error_shape(await api.put("/api/settings/hf-token", json={"token": "x"}), 409, "conflict")


async def test_add_model_by_path(
    api: httpx.AsyncClient, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    added = await api.post("/api/models", json={"path": str(tiny_models["gemma3"])})
    assert added.status_code == 201 and added.json()[0]["path"] == str(tiny_models["gemma3"])
    assert_error_shape(await api.post("/api/models", json={"path": "relative/x.gguf"}), 400, "invalid_input")
    assert_error_shape(
        await api.post("/api/models", json={"path": str(tmp_path / "missing")}), 404, "not_found"
    )
    models = (await api.get("/api/models")).json()
    assert any(
        m["path"] == str(tiny_models["gemma3"]) and m["facts"]["architecture"] == "gemma3" for m in models
    )


async def test_unfinished_jobs_resume_after_a_restart(
    hub: HubServer, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = create_app(settings)
    hub.throttle = 0.01
    await first.state.studio.jobs.start()
    job = await first.state.studio.downloads.submit("tiny/llama-GGUF", "F16")
    while first.state.studio.downloads.get(job["id"])["bytes_done"] < 1_000_000:
        await asyncio.sleep(0.05)
    await first.state.studio.jobs.close()  # the studio goes down mid-download
    hub.throttle = 0.0
    from llamastudio.store.models import JobRow

    with first.state.studio.service.runtime.db.session() as s:
        row = s.get(JobRow, job["id"])
        assert row is not None and row.state == "running"  # left for the next start to settle
        assert row.progress_done >= 1_000_000  # how far it got, saved at shutdown
    second = create_app(settings)
    await second.state.studio.jobs.start()
    try:
        deadline = time.monotonic() + 60
        while second.state.studio.downloads.get(job["id"])["state"] != "done" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        done = second.state.studio.downloads.get(job["id"])
        assert done["state"] == "done"
        assert Path(done["paths"][0]).read_bytes() == tiny_models["llama"].read_bytes()
    finally:
        await second.state.studio.jobs.close()
