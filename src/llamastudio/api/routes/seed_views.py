"""The seed's shapes on the studio's own model routes, which serve both (``serving.py``):

- ``GET /api/models/{id}/config``: the studio's view, plus the seed's llama.cpp parameters
  (``ctx_size`` …) read from the configuration's flags;
- ``PUT /api/models/{id}/config``: the studio's configuration, or the seed's parameters, which
  replace the model's flags (every other field is kept); a body mixing the two, or with a key
  neither knows, is a 422 naming the keys;
- ``POST …/auto-config``: the planner's flags, also as the seed's parameters (not saved);
- ``POST …/start`` / ``…/stop``: the model's status plus the seed's ``model_id``,
  ``proxy_model_name``, ``api_endpoint`` / ``message``.

Only keys are added: the studio's UI and CLI read the same answers as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from llamastudio.api.deps import AppState
from llamastudio.api.routes.seed_params import MANAGED, SEED_KEYS, SeedParams, from_args, to_args
from llamastudio.config import Settings
from llamastudio.services.snapshots import AutoConfig, ConfigView, ModelStatus, SavedConfigView
from llamastudio.serving.configs import ModelConfig

M = TypeVar("M", bound=BaseModel)


class SeedConfigView(ConfigView, SeedParams):
    """A configuration's view, with its flags also named as the seed's parameters."""


class SeedSavedView(SavedConfigView, SeedParams):
    message: str = "Configuration updated"
    ignored: dict[str, str] = Field(
        default_factory=dict, description="Keys accepted but not applied, each with why."
    )


class SeedAutoConfig(AutoConfig, SeedParams):
    """Smart Auto's flags, also as the seed's parameters (not saved: PUT them to keep them)."""


class SeedStarted(ModelStatus):
    model_id: str = Field(description="The id the start was asked for.")
    proxy_model_name: str = Field(description="The name to send as `model` to the gateway.")
    api_endpoint: str = Field(description="The gateway's chat completions URL.")


class SeedStopped(ModelStatus):
    message: str = "Model stopped"


VIEW_KEYS = frozenset(SeedSavedView.model_fields) - SEED_KEYS  # read-only, echoed back by a client
_READ_ONLY = "a field of the configuration view: read-only"


def put_config_doc(studio: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for ``PUT /api/models/{id}/config``: the studio's body or the seed's."""
    schema = {"oneOf": [studio.model_json_schema(), SeedParams.model_json_schema()]}
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {"requestBody": body}


def parse_body(model: type[M], body: dict[str, Any]) -> M:
    """``body`` as ``model``; a 422 in the project's shape (``loc`` under ``body``) when not."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def unknown_keys(keys: list[str], why: str = "", kind: str = "extra_forbidden") -> RequestValidationError:
    """A 422 naming ``keys`` of the body (``api/errors.py`` names every unknown key)."""
    why = why or "Extra inputs are not permitted"
    return RequestValidationError(
        [{"type": kind, "loc": ("body", k), "msg": why, "input": None} for k in keys]
    )


def is_seed_body(body: dict[str, Any], studio: type[BaseModel]) -> bool:
    """Whether a PUT body is the seed's parameters (True) or the studio's configuration (False);
    a 422 naming the keys for a key neither knows or a body mixing both."""
    studio_keys = set(studio.model_fields) | {"configured"}  # the CLI sends the read-only flag too
    seed_keys = SEED_KEYS | MANAGED.keys() | VIEW_KEYS
    unknown = sorted(k for k in body if k not in studio_keys and k not in seed_keys)
    if unknown:
        raise unknown_keys(unknown)
    mine, theirs = sorted(body.keys() & (SEED_KEYS | MANAGED.keys())), sorted(body.keys() & studio_keys)
    if mine and theirs:
        why = f"the seed's llama.cpp parameters ({', '.join(mine)}) cannot be mixed with the studio's fields"
        raise unknown_keys(theirs, why, "mixed_shapes")
    return bool(mine or body.keys() & VIEW_KEYS)


async def put_params(
    state: AppState, name: str, body: dict[str, Any], permit: Callable[[ModelConfig], None]
) -> SeedSavedView:
    """The seed's ``PUT …/config``: its parameters become the model's flags (``auto`` off, as
    the seed ran exactly what it stored); the configuration's other fields are kept."""
    params = parse_body(SeedParams, {k: v for k, v in body.items() if k in SEED_KEYS})
    ignored = {k: MANAGED[k] for k in body if k in MANAGED} | {k: _READ_ONLY for k in body if k in VIEW_KEYS}
    view = await state.service.patch_config(name, {"args": to_args(params), "auto": False}, permit)
    return saved(view, ignored)


def config_view(view: ConfigView) -> SeedConfigView:
    return SeedConfigView(**dict(view), **from_args(view.config.args))


def saved(view: SavedConfigView, ignored: dict[str, str] | None = None) -> SeedSavedView:
    return SeedSavedView(**dict(view), **from_args(view.config.args), ignored=ignored or {})


def auto_config(auto: AutoConfig) -> SeedAutoConfig:
    return SeedAutoConfig(**dict(auto), **from_args(auto.args))


def gateway_url(settings: Settings, port: int | None = None) -> str:
    """The gateway's base URL as a client on this machine reaches it."""
    host = settings.host
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port or settings.gateway_port}"


def started(status: ModelStatus, asked: str, settings: Settings) -> SeedStarted:
    endpoint = gateway_url(settings) + "/v1/chat/completions"
    return SeedStarted(**dict(status), model_id=asked, proxy_model_name=status.name, api_endpoint=endpoint)


def stopped(status: ModelStatus) -> SeedStopped:
    return SeedStopped(**dict(status))
