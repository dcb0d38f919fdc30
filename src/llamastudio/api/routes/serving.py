"""Serving: model configurations, start/stop, running models, logs, import/export."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, require_commands
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.fit.planner import Goal
from llamastudio.hardware.devices import Hardware
from llamastudio.hardware.profiles import resolve_named
from llamastudio.runtime.logfile import MAX_TAIL
from llamastudio.runtime.manager import Runtime, budgets_of
from llamastudio.serving.configs import MAX_TTL, ModelConfig, runs_command, validate
from llamastudio.serving.launch import Prepared

router = APIRouter(prefix="/api", tags=["serving"])


class ConfigIn(BaseModel):
    model: str | None = Field(None, description="Library id or GGUF path (default: the id in the URL).")
    engine_id: str | None = None
    args: list[str] = Field(default_factory=list, description="llama-server flags, e.g. ['-c', '8192'].")
    auto: bool = Field(False, description="Let the planner choose the flags at load time (args = its base).")
    command: list[str] | None = Field(None, description="Another engine's argv with ${PORT}.")
    aliases: list[str] = Field(default_factory=list)
    ttl: float | None = Field(None, description="Idle seconds before unloading; 0 = never; null = default.")
    pinned: bool = False
    group: str | None = None
    max_concurrency: int = 0
    max_queue: int = 64
    reserve: dict[str, int] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    preload: bool = Field(False, description="Start it when the studio starts (pin it to keep it).")


def _runtime(state: StateDep) -> Runtime:
    return state.runtime


def _view(rt: Runtime, cfg: ModelConfig) -> dict[str, Any]:
    """A configuration with what it would run, its memory per device against the budgets, and
    the reason it cannot run (shown next to the config so it can be fixed)."""
    return _shaped(cfg, rt.status(cfg.name), budgets_of(rt.hw), _prepare(rt, cfg))


async def _view_async(rt: Runtime, cfg: ModelConfig) -> dict[str, Any]:
    """:func:`_view` for async routes: the runtime's state is read here, on the loop that owns
    it; the preparation (model header, estimate, engine lookup) runs in a thread."""
    status, budgets = rt.status(cfg.name), budgets_of(rt.hw)
    return _shaped(cfg, status, budgets, await asyncio.to_thread(_prepare, rt, cfg))


def _prepare(rt: Runtime, cfg: ModelConfig) -> Prepared | StudioError:
    try:
        return rt.prepare(cfg)
    except StudioError as exc:
        return exc


def _shaped(
    cfg: ModelConfig, status: dict[str, Any], budgets: dict[str, int], prepared: Prepared | StudioError
) -> dict[str, Any]:
    out: dict[str, Any] = {"config": cfg.to_json(), "status": status, "error": None, "budgets": budgets}
    if isinstance(prepared, StudioError):
        out["prepared"], out["error"], out["fits"] = None, prepared.message, False
        return out
    out["prepared"] = prepared.to_json()
    out["fits"] = all(n <= budgets.get(dev, 0) for dev, n in prepared.reserve.items())
    return out


def _config_from(id: str, body: ConfigIn) -> ModelConfig:
    cfg = ModelConfig(name=id, model=body.model if body.model is not None else ("" if body.command else id))
    for key, value in body.model_dump(exclude={"model"}).items():
        setattr(cfg, key, value)
    return cfg


@router.get("/served")
async def served(state: StateDep) -> list[dict[str, Any]]:
    """Every model the gateway serves, with its state (the library is re-read: new downloads)."""
    rt = _runtime(state)
    await rt.sync()
    return rt.models()


@router.get("/models/{id:path}/config")
async def get_config(state: StateDep, id: str) -> dict[str, Any]:
    rt = _runtime(state)
    return await _view_async(rt, await asyncio.to_thread(rt.configs.get, id))


@router.put("/models/{id:path}/config")
async def put_config(state: StateDep, request: Request, id: str, body: ConfigIn) -> dict[str, Any]:
    rt = _runtime(state)
    cfg = _config_from(id, body)
    require_commands(state, request, runs_command(cfg))
    await asyncio.to_thread(rt.configs.put, cfg)
    await rt.sync()
    view = await _view_async(rt, rt.configs.get(id))
    view["reload_needed"] = rt.reload_needed(cfg.name)
    return view


class ConfigPatch(BaseModel):
    """The fields to change; every field left out keeps its stored value."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    engine_id: str | None = None
    args: list[str] | None = None
    auto: bool | None = None
    command: list[str] | None = None
    aliases: list[str] | None = None
    ttl: float | None = None
    pinned: bool | None = None
    group: str | None = None
    max_concurrency: int | None = None
    max_queue: int | None = None
    reserve: dict[str, int] | None = None
    env: dict[str, str] | None = None
    preload: bool | None = None


_NULLABLE = {"engine_id", "command", "ttl", "group", "reserve"}  # null = the default / none


@router.patch("/models/{id:path}/config")
async def patch_config(state: StateDep, request: Request, id: str, body: ConfigPatch) -> dict[str, Any]:
    """Change only the given fields (``PUT`` replaces the whole configuration). The answer says
    whether the running engine must be restarted for the change (``reload_needed``; apply it with
    ``POST …/reload``, which waits for requests in flight)."""
    rt = _runtime(state)
    try:
        current = await asyncio.to_thread(rt.configs.get, id)
    except NotFound:
        current = ModelConfig(name=id, model=id)
    if current.name != id and not current.configured:  # a library id: configure it under that id
        current = replace(current, name=id)
    changes = body.model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in changes.items() if v is None and k not in _NULLABLE)
    if nulls:
        raise InvalidInput(f"{', '.join(nulls)} cannot be null (leave a field out to keep it)")
    cfg = replace(current, **changes, configured=True)
    require_commands(state, request, runs_command(cfg))
    await asyncio.to_thread(rt.configs.put, cfg)
    await rt.sync()
    view = await _view_async(rt, rt.configs.get(cfg.name))
    view["reload_needed"] = rt.reload_needed(cfg.name)
    return view


@router.post("/models/{id:path}/reload")
async def reload(state: StateDep, id: str) -> dict[str, Any]:
    """Restart a running model with its saved configuration once its requests in flight have
    finished (new requests wait for the restart); a stopped model is left stopped."""
    rt = _runtime(state)
    return await rt.reload(id)


@router.post("/models/{id:path}/preview")
async def preview(state: StateDep, id: str, body: ConfigIn) -> dict[str, Any]:
    """What a configuration would run and cost, without saving it (for a config editor)."""
    cfg = _config_from(id, body)
    validate(cfg)
    # an unknown flag is a 400, as when saving (the engine's flags come from the database)
    await asyncio.to_thread(_runtime(state).configs.check_flags, cfg)
    return await _view_async(_runtime(state), cfg)


@router.delete("/models/{id:path}/config", status_code=204)
async def delete_config(state: StateDep, id: str) -> Response:
    """Stops the model's engine first (its requests in flight finish), then deletes."""
    await _runtime(state).delete_config(id)
    return Response(status_code=204)


class AutoIn(BaseModel):
    goal: Goal = "balanced"
    ctx: int | None = None
    parallel: int | None = None
    args: list[str] = Field(default_factory=list, description="Flags to keep as the starting point.")
    hardware: str | None = None


async def _hardware(rt: Runtime, spec: str | None) -> Hardware:
    """A named profile (it may be a JSON file: read in a thread), else the runtime's hardware."""
    return await asyncio.to_thread(resolve_named, spec) if spec else rt.hw


@router.post("/models/{id:path}/auto-config")
async def auto_config(state: StateDep, id: str, body: AutoIn | None = None) -> dict[str, Any]:
    """Smart Auto: the planner's flags for this model, with one reason per choice (not saved)."""
    body = body or AutoIn()
    rt = _runtime(state)
    hw = await _hardware(rt, body.hardware)
    # the model's header is read and the planner searches: in a thread
    p = await asyncio.to_thread(rt.launcher.smart_auto, id, hw, body.goal, body.ctx, body.parallel, body.args)
    return {"args": p.flags.to_args(), "reasons": p.reasons, "warnings": p.warnings, "plan": p.to_json()}


class EstimateIn(BaseModel):
    args: list[str] = Field(default_factory=list)
    hardware: str | None = None


@router.post("/models/{id:path}/estimate")
async def estimate_config(state: StateDep, id: str, body: EstimateIn) -> dict[str, Any]:
    """Per-device memory for these flags, and whether it fits (for a config editor)."""
    rt = _runtime(state)
    hw = await _hardware(rt, body.hardware)
    return await asyncio.to_thread(
        rt.launcher.estimate_for, id, body.args, hw or rt.hw
    )  # header read + estimate


@router.get("/models/{id:path}/command")
async def command(state: StateDep, id: str) -> dict[str, Any]:
    """The exact argv that starting this model runs (``${PORT}`` is chosen at start)."""
    p = await asyncio.to_thread(_runtime(state).preview, id)  # configuration, engine, header
    return {"argv": p.argv, "dropped": p.dropped, "engine": p.engine.id if p.engine else None}


@router.post("/models/{id:path}/start")
async def start(state: StateDep, id: str) -> dict[str, Any]:
    rt = _runtime(state)
    proc = await rt.load(id)
    return rt.status(proc.name)


@router.post("/models/{id:path}/stop")
async def stop(state: StateDep, id: str) -> dict[str, Any]:
    rt = _runtime(state)
    name = await rt.resolve(id)
    await rt.unload(name)
    return rt.status(name)


@router.get("/models/{id:path}/logs")
async def logs(state: StateDep, id: str, tail: int = 200) -> dict[str, Any]:
    """The last ``tail`` lines (at most 5000) of the model's engine log, rotated files included."""
    if not 1 <= tail <= MAX_TAIL:
        raise InvalidInput(f"tail must be between 1 and {MAX_TAIL}")
    rt = _runtime(state)
    name = await rt.resolve(id)
    return {"model": name, "lines": await rt.logs(name, tail)}


class SettingsIn(BaseModel):
    """Settings the UI may change at run time; each value finite and in range (a stored Infinity
    once made every ``/ws`` frame invalid JSON)."""

    default_ttl: float | None = Field(
        None,
        ge=0,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="Seconds idle before unloading (0 = never; at most ten years).",
    )


@router.get("/settings")
def get_settings(state: StateDep) -> dict[str, Any]:
    s = state.settings
    return {
        "host": s.host,
        "port": s.port,
        "gateway_port": s.gateway_port,
        "lmdeploy_port": s.lmdeploy_port,
        "default_ttl": _runtime(state).default_ttl,
        "api_key_set": bool(s.api_key),
        "gateway_api_key_set": bool(s.gateway_api_key),
        "hardware": s.hardware,
        "data_dir": str(s.data_dir),
    }


@router.put("/settings")
async def put_settings(state: StateDep, body: SettingsIn) -> dict[str, Any]:
    rt = _runtime(state)
    if body.default_ttl is not None:
        await asyncio.to_thread(rt.set_default_ttl, body.default_ttl)
        await rt.sync()
    return get_settings(state)


@router.get("/running")
async def running(state: StateDep) -> list[dict[str, Any]]:
    return _runtime(state).running()  # scheduler state: read on the loop that owns it


@router.post("/running/unload-all")
async def unload_all(state: StateDep) -> dict[str, list[str]]:
    return {"unloaded": await _runtime(state).unload_all()}


Format = Literal["llama-swap", "preset"]


class ImportIn(BaseModel):
    format: Format
    text: str


@router.post("/served/import")
async def import_configs(state: StateDep, request: Request, body: ImportIn) -> dict[str, list[str]]:
    rt = _runtime(state)

    def permit(cfg: ModelConfig) -> None:
        require_commands(state, request, runs_command(cfg))

    configs = await asyncio.to_thread(rt.import_configs, body.format, body.text, permit)
    await rt.sync()
    return {"imported": [c.name for c in configs]}


@router.get("/served/export")
async def export_configs(state: StateDep, format: Format = "llama-swap") -> Response:
    rt = _runtime(state)
    text = await asyncio.to_thread(rt.launcher.export_configs, format, rt.hw)  # database + headers
    return Response(text, media_type="application/yaml" if format == "llama-swap" else "text/plain")
