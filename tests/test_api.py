"""The management API: status, the one error shape, API keys, migrations at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from llamastudio import __version__
from llamastudio.api.app import create_app
from llamastudio.config import Settings
from llamastudio.store.db import head_revision
from llamastudio.store.models import Base

CLIENT = {"X-Studio-Client": "tests"}  # as the UI and the CLI send it (guard.py)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=CLIENT
    ) as client:
        yield client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(settings):
        yield c


def assert_error_shape(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["source"] == "studio"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_status(client: httpx.AsyncClient, settings: Settings) -> None:
    resp = await client.get("/api/status")
    assert resp.status_code == 200
    body = resp.json()
    assert body["version"] == __version__
    assert body["db_ok"] is True
    assert body["db_revision"] == head_revision()
    assert Path(body["data_dir"]) == settings.data_dir
    assert body["uptime_s"] >= 0
    assert settings.db_path.exists()
    for sub in ("logs", "engines", "downloads"):
        assert (settings.data_dir / sub).is_dir()


async def test_gpu_info_on_this_machine(client: httpx.AsyncClient) -> None:
    import psutil

    body = (await client.get("/api/gpu-info")).json()
    assert body["ram_total"] == psutil.virtual_memory().total
    assert body["cpu_cores"] >= 1
    assert isinstance(body["gpus"], list)
    assert body["topology"] in ("single", "all-connected", "clusters", "partial", "none")
    if not body["gpus"]:
        assert body["notes"] == ["no GPU found: planning for the CPU"]


async def test_error_shape_for_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error_shape(await client.get("/api/nope"), 404, "not_found")
    assert_error_shape(await client.post("/api/status"), 405, "method_not_allowed")


async def test_every_route_answers_errors_in_one_shape(client: httpx.AsyncClient) -> None:
    """Each registered /api route, called with the wrong method, answers in the one shape."""
    spec = (await client.get("/openapi.json")).json()
    paths = {p for p in spec["paths"] if p.startswith("/api")}
    assert paths
    for path, ops in spec["paths"].items():
        if not path.startswith("/api"):
            continue
        wrong = next(m for m in ("TRACE", "PATCH", "PUT", "DELETE") if m.lower() not in ops)
        assert_error_shape(await client.request(wrong, path), 405, "method_not_allowed")


async def test_api_key_required_when_configured(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key="s3cret")
    async for client in _client(settings):
        assert_error_shape(await client.get("/api/status"), 401, "unauthorized")
        bad = await client.get("/api/status", headers={"Authorization": "Bearer wrong"})
        assert_error_shape(bad, 401, "unauthorized")
        ok = await client.get("/api/status", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


async def test_migrations_match_models_and_rerun_is_a_noop(settings: Settings) -> None:
    app = create_app(settings)
    db = app.state.studio.service.runtime.db
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    app2 = create_app(settings)  # second start: already at head, nothing to do
    assert app2.state.studio.service.runtime.db.revision == head_revision() == "0009"


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    from llamastudio.errors import StorageError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create data directory"):
        create_app(Settings(data_dir=blocker / "data"))


def test_retry_after_is_rendered_on_the_api_too() -> None:
    """Issue 14: errors that say when to come back carried Retry-After on the gateway only."""
    from llamastudio.errors import StartFailed

    exc = StartFailed("m failed to start 3x; next try in 7s", retry_after=6.6)
    assert exc.headers() == {"Retry-After": "6"}
    assert StartFailed("no hint").headers() == {}
