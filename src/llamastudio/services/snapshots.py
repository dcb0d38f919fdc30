"""The typed snapshots the faces read: pydantic models, built on the event loop by the façade.

Their JSON is the API's (``/api/served``, ``/api/running``, ``/api/models/{id}/config`` …), the
gateway's (``/v1/models``, ``/metrics``) and the CLI's (``ps --json``, ``models show --json``);
field order is the JSON's key order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from llamastudio.serving.configs import ModelConfig

# stopped → starting → ready → stopping (the scheduler's), plus failed (its process died or did not
# start) and unavailable (its configuration cannot be prepared: ``reason`` says why)
StateName = Literal["stopped", "starting", "ready", "stopping", "failed", "unavailable"]


class Snapshot(BaseModel):
    """A response: every field is always sent (required in the OpenAPI schema, so the UI's
    generated types need no optional checks)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ModelStatus(Snapshot):
    """One model's state as the scheduler and its supervised process see it now."""

    name: str
    state: StateName
    note: str | None = Field(
        None,
        description="Why it last stopped (TTL, evicted for whom, on request), or 'restarting (attempt n)'.",
    )
    reason: str | None = Field(None, description="Why it failed or cannot run.")
    in_flight: int = 0
    queued: int = 0
    idle_s: float | None = None
    pid: int | None = None
    port: int | None = None
    engine: str | None = None
    memory: dict[str, int] = Field(default_factory=dict, description="Bytes it reserves per device.")
    pinned: bool = False
    ttl: float | None = None
    max_concurrency: int = 0


class ModelTraits(Snapshot):
    """What a model does (known once it is prepared): the gateway routes and refuses by it, the
    playground picks chat or completion by it."""

    role: Literal["chat", "embedding", "rerank"] = "chat"
    vision: bool | None = Field(
        None, description="Takes images (llama.cpp: a multimodal projector is loaded); null: not known."
    )
    chat_template: bool | None = Field(
        None, description="Has a chat template (False: a base model, use completions); null: not known."
    )
    template_family: str | None = None
    tools: bool = Field(False, description="Its chat template renders tool definitions.")
    draft: str | None = Field(None, description="The draft model's file, with speculative decoding.")


class ServedModel(ModelStatus):
    """A model the gateway serves: its status, what it runs and the names it answers to."""

    model: str = Field(description="Library id or GGUF path ('' for a command).")
    aliases: list[str] = Field(default_factory=list)
    configured: bool = Field(description="False: a library model served with defaults.")
    traits: ModelTraits = Field(default_factory=ModelTraits)
    title: str | None = Field(None, description="Display name (llama-swap `name`).")
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="llama-swap `metadata`.")
    unlisted: bool = Field(False, description="Served but not listed in /v1/models.")


class DeviceBytes(Snapshot):
    name: str
    label: str
    total: int
    parts: dict[str, int] = Field(
        default_factory=dict, description="Bytes by category (model, kv, rs, output, compute, mmproj, draft)."
    )


class EstimateView(Snapshot):
    devices: list[DeviceBytes]
    n_ctx: int
    n_gpu_layers: int


class MemoryView(Snapshot):
    """A llama.cpp load's memory: the estimate, and what the engine allocated at a load of the
    same key (same model file contents, engine build, memory flags and devices), if one ran."""

    key: str = Field(description="The load key the measurement is stored under.")
    source: Literal["estimate", "measured", "manual"] = Field(
        description="What the reservation is: the estimate, the measured figure, or the config's own."
    )
    estimated: dict[str, int] = Field(description="Estimated bytes per device (llama.cpp's logged buffers).")
    measured: dict[str, int] | None = Field(
        None, description="Bytes per device llama-server logged at the measured load; null: none yet."
    )
    process: dict[str, int] = Field(
        default_factory=dict, description="Most GPU memory the process held per device (NVML)."
    )
    measured_at: str | None = Field(None, description="When the buffers were measured (ISO 8601, UTC).")
    loads: int = Field(0, description="Loads of this key that added to the measurement.")
    comparable: bool | None = Field(
        None, description="False: llama.cpp's --fit changed that load's parameters; not used for placement."
    )
    note: str | None = None
    drift: dict[str, float] = Field(
        default_factory=dict,
        description="(estimated - measured) / measured per device; < 0: under-estimated.",
    )
    summary: list[str] = Field(
        default_factory=list, description="Per device: 'estimated X, measured Y on <date> (±d %)'."
    )


class PreparedView(Snapshot):
    """What starting a model runs (``${PORT}`` is chosen at start) and the memory it reserves."""

    name: str
    argv: list[str]
    kind: str
    engine: str | None
    model_path: str | None
    reserve: dict[str, int]
    threads: int
    env: dict[str, str] = Field(
        default_factory=dict, description="What the engine kind sets in its environment."
    )
    estimate: EstimateView | None
    reasons: list[str]
    dropped: list[str]
    warnings: list[str]
    traits: ModelTraits = Field(default_factory=ModelTraits)
    memory: MemoryView | None = Field(
        None, description="llama.cpp: the estimate beside the measured memory of the same load."
    )


class ConfigView(Snapshot):
    """A configuration with its status, what it would run, its memory per device against the
    budgets, and the reason it cannot run (shown next to the config so it can be fixed)."""

    config: Annotated[ModelConfig, SkipValidation]  # checked when it was stored
    status: ModelStatus
    error: str | None
    budgets: dict[str, int]
    prepared: PreparedView | None
    fits: bool


class SavedConfigView(ConfigView):
    reload_needed: bool = Field(
        description="The running engine runs an older command: `POST …/reload` applies the change."
    )


class CommandView(Snapshot):
    argv: list[str]
    dropped: list[str]
    engine: str | None


class AutoConfig(Snapshot):
    """Smart Auto: the planner's flags for a model, one reason per choice (not saved)."""

    args: list[str]
    reasons: list[str]
    warnings: list[str]
    plan: dict[str, Any]


class DeviceFit(Snapshot):
    name: str
    label: str
    total: int
    free: int
    fits: bool
    parts: dict[str, int] = Field(
        default_factory=dict,
        description="Bytes by category: model, kv, rs, output, compute, mmproj (the projector), "
        "draft (the draft model, all of it).",
    )


class DraftCandidate(Snapshot):
    """A library model that can draft for another (same vocabulary, smaller)."""

    id: str
    path: str
    size: int
    quant: str


class MemoryEstimate(Snapshot):
    """Per-device memory of a model with some flags, against each device's free memory."""

    devices: list[DeviceFit]
    fits: bool
    n_ctx: int
    n_gpu_layers: int


class LogTail(Snapshot):
    model: str
    lines: list[str]


class GatewayModelStatus(Snapshot):
    state: StateName
    reason: str | None
    in_flight: int
    queued: int
    idle_s: float | None
    memory: dict[str, int]


class GatewayModel(Snapshot):
    """One entry of the gateway's ``/v1/models`` (OpenAI's shape plus aliases and status)."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llamastudio"
    aliases: list[str]
    status: GatewayModelStatus
    capabilities: list[str] = Field(
        default_factory=list,
        description="What it answers: chat, completion, vision, tools, embedding, rerank.",
    )
    chat_template: bool | None = Field(
        None, description="False: a base model without a chat template (use /v1/completions)."
    )
    name: str | None = Field(None, description="Display name (llama-swap `name`); null when unset.")
    description: str | None = None
    meta: dict[str, Any] | None = Field(None, description="llama-swap's `{llamaswap: metadata}`.")


class MetricsSnapshot(Snapshot):
    """The scheduler's numbers for the gateway's ``/metrics`` (per model, and since start)."""

    in_flight: dict[str, int]
    queue_depth: dict[str, int]
    loaded: dict[str, bool]
    loads: int
    evictions: int
    ttl_unloads: int
    estimate_drift: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per model and device with a measurement: (estimated - measured) / measured.",
    )
    estimate_drifts: dict[str, int] = Field(
        default_factory=dict, description="Per model: loads measured with a drift over 5 % since start."
    )


class DatabaseStatus(Snapshot):
    ok: bool
    revision: str
