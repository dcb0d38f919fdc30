"""Engines over REST: list, build from source and install releases as jobs with a live log,
updates, default, validate, remove (refused while a model runs on it)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from llamastudio.api.deps import StateDep, require_commands
from llamastudio.engines.build import Builder, BuildSpec, foreign_code
from llamastudio.engines.registry import Engine, EngineRegistry
from llamastudio.engines.releases import GitHubReleases, install, updates
from llamastudio.engines.validate import revalidate

router = APIRouter(prefix="/api/engines", tags=["engines"])


def _registry(state: StateDep) -> EngineRegistry:
    return state.runtime.engines


def _github(state: StateDep) -> GitHubReleases:
    s = state.settings
    return GitHubReleases(s.github_api, s.github_repo, s.github_token or os.environ.get("GITHUB_TOKEN"))


def _view(e: Engine, in_use: bool) -> dict[str, Any]:
    data = e.to_json()
    data["capability_count"] = len(e.capabilities)
    data["in_use"] = in_use
    return data


@router.get("")
def list_engines(state: StateDep) -> list[dict[str, Any]]:
    rt = state.runtime
    return [_view(e, rt.engine_in_use(e.id)) for e in _registry(state).all()]


class BuildIn(BaseModel):
    source: str = Field("https://github.com/ggml-org/llama.cpp", description="Directory, tarball or git URL.")
    ref: str = "master"
    backends: list[str] = Field(default_factory=lambda: ["cpu"])
    build_type: str = "Release"
    cuda_architectures: str | None = None
    cmake_args: list[str] = Field(default_factory=list)
    cflags: str = ""
    cxxflags: str = ""
    targets: list[str] = Field(default_factory=list)
    patches: list[str] = Field(default_factory=list, description="PR URLs, patch URLs or files.")
    name: str | None = None
    build_number: str | None = None
    default: bool = False


@router.post("/build", status_code=202)
async def build(state: StateDep, request: Request, body: BuildIn) -> dict[str, Any]:
    spec = BuildSpec(
        source=body.source,
        ref=body.ref,
        backends=tuple(body.backends or ["cpu"]),
        build_type=body.build_type,
        cuda_architectures=body.cuda_architectures,
        cmake_args=tuple(body.cmake_args),
        cflags=body.cflags,
        cxxflags=body.cxxflags,
        targets=tuple(dict.fromkeys(["llama-server", *body.targets])),
        patches=tuple(body.patches),
        name=body.name,
        build_number=body.build_number,
    )
    require_commands(state, request, foreign_code(spec, state.settings.github_repo))
    reg = _registry(state)

    async def work(log: Callable[[str], None], cancel: asyncio.Event) -> Engine:
        result = await Builder(reg).build(spec, log, cancel)
        if body.default:
            reg.set_default(result.engine.id)
        log(("reused" if result.reused else "built") + f" engine {result.engine.id}")
        await state.runtime.sync()
        return result.engine

    return state.engine_jobs.submit(
        "build", f"build {body.source} ({', '.join(spec.backends)})", work
    ).to_json()


class InstallIn(BaseModel):
    tag: str | None = None
    backend: str = "cpu"
    default: bool = False


@router.post("/install", status_code=202)
async def install_release(state: StateDep, body: InstallIn) -> dict[str, Any]:
    reg, gh = _registry(state), _github(state)

    async def work(log: Callable[[str], None], cancel: asyncio.Event) -> Engine:
        def progress(done: int, total: int | None) -> None:
            if total and done == total:
                log(f"downloaded {done:,} bytes")

        log(f"installing release {body.tag or 'latest'} ({body.backend})")
        engine = await asyncio.to_thread(install, gh, reg, body.tag, body.backend, None, None, progress)
        if body.default:
            reg.set_default(engine.id)
        log(f"installed engine {engine.id}")
        await state.runtime.sync()
        return engine

    return state.engine_jobs.submit(
        "install", f"install {body.tag or 'latest'} ({body.backend})", work
    ).to_json()


@router.get("/jobs")
def jobs(state: StateDep) -> list[dict[str, Any]]:
    return [j.to_json() for j in state.engine_jobs.jobs.values()]


@router.get("/jobs/{job_id}")
def job(state: StateDep, job_id: str, tail: int = 500) -> dict[str, Any]:
    return state.engine_jobs.get(job_id).to_json(log_tail=max(1, min(tail, 2000)))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.engine_jobs.cancel(job_id).to_json()


@router.get("/updates")
def check_updates(state: StateDep) -> list[dict[str, Any]]:
    return updates(_github(state), _registry(state).all())


@router.put("/{engine_id}/default")
async def set_default(state: StateDep, engine_id: str) -> dict[str, Any]:
    engine = _registry(state).set_default(engine_id)
    await state.runtime.sync()
    return _view(engine, state.runtime.engine_in_use(engine.id))


@router.post("/{engine_id}/validate")
async def validate(state: StateDep, engine_id: str) -> dict[str, Any]:
    reg = _registry(state)
    engine = await asyncio.to_thread(revalidate, reg, reg.get(engine_id))
    return _view(engine, state.runtime.engine_in_use(engine.id))


@router.delete("/{engine_id}", status_code=204)
async def remove(state: StateDep, engine_id: str) -> Response:
    _registry(state).remove(engine_id, state.runtime.engine_in_use)
    await state.runtime.sync()
    return Response(status_code=204)
