"""Serving: model configurations, start/stop, running models, logs, import/export — each route
one call of the service façade (``services/``), answering with its typed snapshot."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from llamastudio.api.deps import StateDep, config_permit, require_commands
from llamastudio.api.routes import seed_views
from llamastudio.errors import CommandsNotAllowed
from llamastudio.fit.planner import Goal
from llamastudio.services.snapshots import (
    CommandView,
    ConfigView,
    DraftCandidate,
    LogTail,
    MemoryEstimate,
    ModelStatus,
    SavedConfigView,
    ServedModel,
)
from llamastudio.serving.configs import MAX_TTL, ModelConfig
from llamastudio.serving.swapmacros import NoEnvironment

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
    # llama-swap's per-model keys (see serving/llamaswap.py)
    unlisted: bool = Field(False, description="Served, but not listed in /v1/models.")
    title: str | None = Field(None, description="Display name in /v1/models (llama-swap `name`).")
    description: str | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Shown in /v1/models (meta.llamaswap)."
    )
    use_model_name: str | None = Field(None, description="The `model` the engine receives.")
    strip_params: list[str] = Field(default_factory=list, description="Body keys removed before relay.")
    set_params: dict[str, Any] = Field(default_factory=dict, description="Body keys set before relay.")
    check_endpoint: str | None = Field(None, description="Readiness path (default: the engine kind's).")
    start_timeout: float | None = Field(None, description="Seconds a start may take (default: by size).")
    cmd_stop: list[str] | None = Field(None, description="Argv run to stop the engine (${PID}).")
    proxy: str | None = Field(None, description="Fixed URL requests go to, instead of ${PORT}.")
    group_swap: bool = Field(True, description="Members of `group` never run together.")
    group_exclusive: bool = Field(False, description="A member's start stops other groups' models.")
    group_persistent: bool = Field(False, description="Never stopped for another group's model.")
    source: str | None = Field(None, description="file:<path>: owned by the watched config file.")
    extra: dict[str, Any] = Field(default_factory=dict, description="llama-swap keys kept for export.")


def _config_from(id: str, body: ConfigIn) -> ModelConfig:
    cfg = ModelConfig(name=id, model=body.model if body.model is not None else ("" if body.command else id))
    for key, value in body.model_dump(exclude={"model"}).items():
        setattr(cfg, key, value)
    return cfg


@router.get("/served")
async def served(state: StateDep) -> list[ServedModel]:
    """Every model the gateway serves, with its state (the library is re-read: new downloads)."""
    return await state.service.served()


@router.get("/models/{id:path}/config")
async def get_config(state: StateDep, id: str) -> seed_views.SeedConfigView:
    """The configuration's view; its flags also as the seed's parameters (``seed_views.py``)."""
    return seed_views.config_view(await state.service.get_config(id))


@router.put("/models/{id:path}/config", openapi_extra=seed_views.put_config_doc(ConfigIn))
async def put_config(
    state: StateDep, request: Request, id: str, body: Annotated[dict[str, Any], Body()]
) -> seed_views.SeedSavedView:
    """Replace the whole configuration (fields left out take their defaults; ``PATCH`` keeps them).
    The seed's body, its llama.cpp parameters (``ctx_size`` …), replaces only the flags."""
    permit = config_permit(state, request)
    if seed_views.is_seed_body(body, ConfigIn):
        return await seed_views.put_params(state, id, body, permit)
    cfg = _config_from(id, seed_views.parse_body(ConfigIn, body))
    return seed_views.saved(await state.service.put_config(cfg, permit))


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
    unlisted: bool | None = None
    title: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    use_model_name: str | None = None
    strip_params: list[str] | None = None
    set_params: dict[str, Any] | None = None
    check_endpoint: str | None = None
    start_timeout: float | None = None
    cmd_stop: list[str] | None = None
    proxy: str | None = None
    group_swap: bool | None = None
    group_exclusive: bool | None = None
    group_persistent: bool | None = None
    source: str | None = None
    extra: dict[str, Any] | None = None


@router.patch("/models/{id:path}/config")
async def patch_config(state: StateDep, request: Request, id: str, body: ConfigPatch) -> SavedConfigView:
    """Change only the given fields (``PUT`` replaces the whole configuration). The answer says
    whether the running engine must be restarted for the change (``reload_needed``; apply it with
    ``POST …/reload``, which waits for requests in flight)."""
    changes = body.model_dump(exclude_unset=True)
    return await state.service.patch_config(id, changes, config_permit(state, request))


@router.post("/models/{id:path}/reload")
async def reload(state: StateDep, id: str) -> ModelStatus:
    """Restart a running model with its saved configuration once its requests in flight have
    finished (new requests wait for the restart); a stopped model is left stopped."""
    return await state.service.reload(id)


@router.post("/models/{id:path}/preview")
async def preview(state: StateDep, id: str, body: ConfigIn) -> ConfigView:
    """What a configuration would run and cost, without saving it (for a config editor)."""
    return await state.service.preview(_config_from(id, body))


@router.delete("/models/{id:path}/config", status_code=204)
async def delete_config(state: StateDep, id: str) -> Response:
    """Stops the model's engine first (its requests in flight finish), then deletes."""
    await state.service.delete_config(id)
    return Response(status_code=204)


class AutoIn(BaseModel):
    goal: Goal = "balanced"
    ctx: int | None = None
    parallel: int | None = None
    args: list[str] = Field(default_factory=list, description="Flags to keep as the starting point.")
    hardware: str | None = None


@router.post("/models/{id:path}/auto-config")
async def auto_config(state: StateDep, id: str, body: AutoIn | None = None) -> seed_views.SeedAutoConfig:
    """Smart Auto: the planner's flags for this model, with one reason per choice (not saved);
    also as the seed's parameters."""
    b = body or AutoIn()
    auto = await state.service.smart_auto(id, b.goal, b.ctx, b.parallel, b.args, b.hardware)
    return seed_views.auto_config(auto)


class EstimateIn(BaseModel):
    args: list[str] = Field(default_factory=list)
    hardware: str | None = None


@router.post("/models/{id:path}/estimate")
async def estimate_config(state: StateDep, id: str, body: EstimateIn) -> MemoryEstimate:
    """Per-device memory for these flags, and whether it fits (for a config editor)."""
    return await state.service.estimate(id, body.args, body.hardware)


@router.get("/models/{id:path}/drafts")
async def drafts(state: StateDep, id: str) -> list[DraftCandidate]:
    """Library models that can draft for this one (speculative decoding, ``-md``): GGUF chat
    models with the same vocabulary, smaller than it, smallest first."""
    return await state.service.draft_candidates(id)


@router.get("/models/{id:path}/command")
async def command(state: StateDep, id: str) -> CommandView:
    """The exact argv that starting this model runs (``${PORT}`` is chosen at start)."""
    return await state.service.command(id)


@router.post("/models/{id:path}/start")
async def start(state: StateDep, id: str) -> seed_views.SeedStarted:
    """Start (waits until ready); also the seed's ``proxy_model_name`` and ``api_endpoint``."""
    return seed_views.started(await state.service.start_model(id), id, state.settings)


@router.post("/models/{id:path}/stop")
async def stop(state: StateDep, id: str) -> seed_views.SeedStopped:
    return seed_views.stopped(await state.service.stop_model(id))


@router.get("/models/{id:path}/logs")
async def logs(state: StateDep, id: str, tail: int = 200) -> LogTail:
    """The last ``tail`` lines (at most 5000) of the model's engine log, rotated files included."""
    return await state.service.logs(id, tail)


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


class SettingsPublic(BaseModel):
    host: str
    port: int
    gateway_port: int
    lmdeploy_port: int
    default_ttl: float
    api_key_set: bool
    gateway_api_key_set: bool
    hardware: str | None
    data_dir: str


@router.get("/settings")
async def get_settings(state: StateDep) -> SettingsPublic:
    s = state.settings
    return SettingsPublic(
        host=s.host,
        port=s.port,
        gateway_port=s.gateway_port,
        lmdeploy_port=s.lmdeploy_port,
        default_ttl=await state.service.default_ttl(),
        api_key_set=bool(s.api_key),
        gateway_api_key_set=bool(s.gateway_api_key),
        hardware=s.hardware,
        data_dir=str(s.data_dir),
    )


@router.put("/settings")
async def put_settings(state: StateDep, body: SettingsIn) -> SettingsPublic:
    if body.default_ttl is not None:
        await state.service.set_default_ttl(body.default_ttl)
    return await get_settings(state)


@router.get("/running")
async def running(state: StateDep) -> list[ModelStatus]:
    return await state.service.running()


@router.post("/running/unload-all")
async def unload_all(state: StateDep) -> dict[str, list[str]]:
    return {"unloaded": await state.service.unload_all()}


Format = Literal["llama-swap", "preset"]


class ImportIn(BaseModel):
    format: Format
    text: str


@router.post("/served/import")
async def import_configs(state: StateDep, request: Request, body: ImportIn) -> dict[str, Any]:
    """Store every configuration of the document, or none (one transaction). The answer:
    ``imported`` (names), ``ignored`` (``{key, why}``: kept for export, not applied), ``api_keys``
    (how many the gateway now accepts from it; null: the document has no ``apiKeys``), ``peers``
    (their names; null: none given) and ``removed`` (always empty here: see the config file)."""
    try:  # ${env.X} reads the studio's environment (its secrets too): the command permission's
        require_commands(state, request, "${env.X} in an import")
        env = None
    except CommandsNotAllowed:
        env = NoEnvironment()
    done = await state.service.import_configs(body.format, body.text, config_permit(state, request), env=env)
    return done.to_json()


@router.get("/served/config-file")
async def config_file(state: StateDep) -> dict[str, Any]:
    """The watched llama-swap config file (``serve --config``): its path, whether its current
    version is applied (``ok``; else ``error`` says why and the previous version keeps serving),
    when it was last imported, and what it imported and ignored. ``{"path": null}`` without one."""
    watch = state.service.watch
    return watch.status() if watch is not None else {"path": None}


@router.get("/served/export")
async def export_configs(state: StateDep, request: Request, format: Format = "llama-swap") -> Response:
    """The stored configurations as a file. ``apiKeys`` and peers' ``apiKey`` (secrets, perhaps
    the owner's ``${env.X}``) only for a caller with the command permission (the CLI)."""
    try:
        require_commands(state, request, "the keys in an export")
        secrets = True
    except CommandsNotAllowed:
        secrets = False
    text = await state.service.export_configs(format, secrets)
    return Response(text, media_type="application/yaml" if format == "llama-swap" else "text/plain")
