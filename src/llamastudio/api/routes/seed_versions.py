"""The seed's ``/api/llama-versions`` paths, as thin aliases over the studio's engine routes
(``engines.py``): list, check for updates, what can be built here, install a release, build from
source, delete. Builds and installs are jobs of the one job system: the answer's ``task_id`` is the
job's id (``/api/jobs/{id}``, and its progress on ``/ws``). A build needs the same permission as
``POST /api/engines/build`` (``LLAMASTUDIO_ALLOW_COMMANDS`` for patches, another source, or CMake
arguments and compiler flags beyond plain switches).

A "version" is a llama.cpp engine; its ``id`` is the engine's id; ``is_active`` is the default.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep
from llamastudio.api.routes import engines
from llamastudio.api.routes.seed_build import SeedBuildConfig, build_in
from llamastudio.config import Settings
from llamastudio.engines.buildspec import missing_toolchain
from llamastudio.engines.registry import LLAMA_CPP
from llamastudio.engines.releases import GitHubReleases, host_platform, select_asset
from llamastudio.errors import InvalidInput, NotFound
from llamastudio.hardware.discover import discover

router = APIRouter(prefix="/api/llama-versions", tags=["seed API"])

# the seed's backend names → the studio's (``BuildSpec.backends``), and the GPUs each one runs on
BACKENDS = {
    "cpu": "cpu",
    "cuda": "cuda",
    "vulkan": "vulkan",
    "metal": "metal",
    "openblas": "openblas",
    "rocm": "hip",
}
_DEVICES = {"cuda": {"CUDA"}, "rocm": {"ROCm"}, "metal": {"Metal"}, "vulkan": {"CUDA", "ROCm", "Vulkan"}}
_GPU_BACKENDS = ("cuda", "rocm", "metal", "vulkan")  # the one recommended: the first that fits


def _github(settings: Settings) -> GitHubReleases:
    return GitHubReleases(settings.github_api, settings.github_repo, settings.github_token)


def _installed_at(root: str) -> str | None:
    try:
        return datetime.fromtimestamp(os.stat(root).st_mtime, UTC).isoformat()
    except OSError:
        return None


def _version(e: dict[str, Any], installed_at: str | None) -> dict[str, Any]:
    return {
        "id": e["id"],
        "version": e["version"] or e["name"],
        "install_type": "patched" if e["patches"] else e["kind"],
        "binary_path": e["binaries"].get("llama-server"),
        "source_commit": e["commit"] or None,
        "patches": [p.get("origin") or p.get("url") for p in e["patches"]],
        "installed_at": installed_at,
        "is_active": e["is_default"],
        "build_config": {"backends": e["backends"], **e["build_options"]} if e["build_options"] else None,
        # the studio's own fields beside them
        "name": e["name"],
        "kind": e["kind"],
        "backends": e["backends"],
        "in_use": e["in_use"],
    }


@router.get("", summary="Installed llama.cpp versions (the seed's form of GET /api/engines)")
async def list_versions(state: StateDep) -> list[dict[str, Any]]:
    """Every llama.cpp engine (other families are in ``GET /api/engines``)."""
    found = [e for e in await engines.list_engines(state) if e["family"] == LLAMA_CPP]
    dates = await asyncio.to_thread(lambda: [_installed_at(e["root"]) for e in found])
    return [_version(e, d) for e, d in zip(found, dates, strict=True)]


@router.get("/check-updates", summary="The newest release and commit (with GET /api/engines/updates)")
async def check_updates(state: StateDep) -> dict[str, Any]:
    """The repository's newest release and the newest commit of its default branch (the GitHub
    API at ``LLAMASTUDIO_GITHUB_API``), and per engine whether a newer one exists (``engines``)."""

    def latest() -> dict[str, Any]:  # network
        gh = _github(state.settings)
        release, commit = gh.release(), gh.latest_commit()
        return {
            "latest_release": {
                "tag_name": release.tag,
                "published_at": release.published_at or None,
                "html_url": release.html_url or f"https://github.com/{gh.repo}/releases/tag/{release.tag}",
            },
            "latest_commit": {"sha": commit.sha, "commit_date": commit.date, "message": commit.message},
        }

    found = await asyncio.to_thread(latest)
    return found | {"engines": await engines.check_updates(state)}


def _capabilities() -> dict[str, dict[str, Any]]:
    """Blocking: looks for programs and headers on disk, and for GPUs."""
    present = {g.backend for g in discover().gpus}
    out: dict[str, dict[str, Any]] = {}
    for name, backend in BACKENDS.items():
        missing = missing_toolchain((backend,))
        devices = _DEVICES.get(name)
        device = devices is None or bool(devices & present)
        if missing:
            reason = "missing: " + "; ".join(missing)
        elif devices is None:
            reason = "can be built here"
        else:
            reason = "can be built here" + ("" if device else f"; no {name} device on this machine")
        out[name] = {"available": not missing, "recommended": False, "reason": reason, "missing": missing}
        out[name] |= {"device": device, "backend": backend}
    gpu = next((n for n in _GPU_BACKENDS if out[n]["available"] and out[n]["device"]), None)
    for name in (gpu,) if gpu else ("cpu", "openblas"):
        out[name]["recommended"] = out[name]["available"]
    return out


@router.get("/build-capabilities", summary="Which backends can be built here, and what is missing")
async def build_capabilities() -> dict[str, dict[str, Any]]:
    """Per backend (cpu, cuda, vulkan, metal, openblas, rocm): ``available`` (its toolchain is
    here: cmake, a C++ compiler, make or ninja, and nvcc / glslc + Vulkan headers / hipcc /
    OpenBLAS headers / macOS), ``missing`` (each with how to get it), ``device`` (this machine has
    a GPU it runs on), ``recommended`` (the one to build here), ``backend`` (the studio's name,
    for ``POST /api/engines/build``)."""
    return await asyncio.to_thread(_capabilities)


class InstallReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag_name: str = Field(min_length=1, max_length=100, description="The release, e.g. `b6000`.")
    asset_id: int | None = Field(None, description="The release asset to install (GitHub's id).")
    backend: str | None = Field(
        None,
        pattern=r"^[a-z0-9]{2,20}$",
        description="Instead of `asset_id`: cpu (default), cuda, vulkan, rocm … (a build for this OS).",
    )


def _asset_backend(settings: Settings, tag: str, asset_id: int) -> str:
    """The backend whose build for this machine is the asset ``asset_id``. Blocking: network."""
    release = _github(settings).release(tag)
    asset = next((a for a in release.assets if a.id == asset_id), None)
    if asset is None:
        offered = ", ".join(f"{a.name} ({a.id})" for a in release.assets) or "none"
        raise NotFound(f"release {tag} has no asset {asset_id} (its assets: {offered})")
    os_name, arch = host_platform()
    for backend in ("cpu", "cuda", "vulkan", "hip", "sycl", "opencl", "musa", "cann", "openvino"):
        try:
            if select_asset(release, os_name, arch, backend) == asset:
                return backend
        except NotFound:
            continue
    raise InvalidInput(
        f"asset {asset.name} ({asset_id}) is not the build the studio installs on this machine "
        f"({os_name}-{arch}): pick another, or give `backend`"
    )


@router.post("/install-release", summary="Install a release (the seed's form of POST /api/engines/install)")
async def install_release(state: StateDep, body: InstallReleaseIn) -> dict[str, Any]:
    """An install job: downloads the release's build for this OS and the asset's (or
    ``backend``'s) backend, checks that its llama-server runs, registers it as an engine."""
    backend = {"rocm": "hip"}.get(body.backend or "", body.backend)
    if body.asset_id is not None:
        of_asset = await asyncio.to_thread(_asset_backend, state.settings, body.tag_name, body.asset_id)
        if backend is not None and backend != of_asset:
            raise InvalidInput(f"asset {body.asset_id} is the {of_asset} build, not {body.backend}")
        backend = of_asset
    backend = backend or "cpu"
    job = await engines.install_release(state, engines.InstallIn(tag=body.tag_name, backend=backend))
    return job | {
        "message": f"Installing release {body.tag_name}",
        "task_id": job["id"],
        "status": "started",
        "progress": 0,
        "asset_id": body.asset_id,
        "version_name": f"llama.cpp-{body.tag_name}-{backend}",  # the engine id it registers
    }


class BuildSourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commit_sha: str = Field(min_length=1, description="A commit, branch or tag of llama.cpp.")
    patches: list[str] = Field(default_factory=list, description="PR URLs or patch URLs.")
    build_config: SeedBuildConfig = Field(default_factory=SeedBuildConfig)


@router.post("/build-source", summary="Build from source (the seed's form of POST /api/engines/build)")
async def build_source(state: StateDep, request: Request, body: BuildSourceIn) -> dict[str, Any]:
    """A build job of the official repository (``LLAMASTUDIO_GITHUB_REPO``) at ``commit_sha``,
    with the seed's ``build_config`` as the studio's build options (``seed_build.py``)."""
    source = f"https://github.com/{state.settings.github_repo}"
    spec = build_in(source, body.commit_sha, body.patches, body.build_config)
    job = await engines.build(state, request, spec)
    return job | {
        "message": f"Building from source {body.commit_sha[:8]}",
        "task_id": job["id"],
        "status": "started",
        "progress": 0,
    }


@router.delete("/{version_id}", summary="Delete a version (the seed's form of DELETE /api/engines/{id})")
async def delete_version(state: StateDep, version_id: str) -> dict[str, str]:
    """A llama.cpp engine and its files; refused (409) while a model runs on it."""
    engine = next((e for e in await engines.list_engines(state) if e["id"] == version_id), None)
    if engine is None or engine["family"] != LLAMA_CPP:
        raise NotFound(f"no llama.cpp version {version_id!r} (GET /api/llama-versions lists them)")
    await engines.remove(state, version_id)
    return {"message": f"Deleted llama-cpp version {engine['version'] or version_id}"}
