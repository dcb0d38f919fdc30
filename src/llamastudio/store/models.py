"""SQLAlchemy ORM models. Schema changes go through an Alembic migration, never ALTER by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class SettingRow(Base):
    """Settings changed at run time (UI/API); env and CLI values are not stored here."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class JobRow(Base):
    """A long-running piece of work (download, build, install, model load): see ``jobs/``."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    # queued|running|paused|done|failed|cancelled
    state: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(512), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # fraction done, 0..1
    progress_done: Mapped[float] = mapped_column(Float, default=0.0)
    progress_total: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_unit: Mapped[str] = mapped_column(String(16), default="")  # bytes | steps | ""
    message: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_lines: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EngineRow(Base):
    """One llama.cpp build (or another engine's binary) registered with the studio."""

    __tablename__ = "engines"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # release | source | external | venv
    # the server it runs: llama.cpp | vllm | sglang | lmdeploy (``engines/kinds``)
    family: Mapped[str] = mapped_column(String(16), default="llama.cpp", server_default="llama.cpp")
    version: Mapped[str] = mapped_column(String(64), default="")
    commit: Mapped[str] = mapped_column(String(64), default="")
    backends: Mapped[list[str]] = mapped_column(JSON, default=list)
    build_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    patches: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # where it came from
    build_key: Mapped[str] = mapped_column(String(64), default="", index=True)
    root: Mapped[str] = mapped_column(Text)  # directory holding the engine's files
    binaries: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # tool name → path
    validation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    capabilities: Mapped[list[str]] = mapped_column(JSON, default=list)  # flags from --help
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelPinRow(Base):
    """A model (by its path, URL or library id) pinned to one engine."""

    __tablename__ = "model_pins"

    model: Mapped[str] = mapped_column(String(1024), primary_key=True)
    engine_id: Mapped[str] = mapped_column(ForeignKey("engines.id", ondelete="CASCADE"), index=True)


class LibraryPathRow(Base):
    """A file or directory of GGUF models the user added; used in place, never copied."""

    __tablename__ = "library_paths"

    path: Mapped[str] = mapped_column(String(4096), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServedModelRow(Base):
    """How one model is served by the gateway: what to run, with which flags, and its lifecycle."""

    __tablename__ = "served_models"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # the gateway's model name
    model: Mapped[str] = mapped_column(Text)  # a library id or a GGUF path
    engine_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: pin or default
    args: Mapped[list[str]] = mapped_column(JSON, default=list)  # llama-server flags
    auto: Mapped[bool] = mapped_column(Boolean, default=False)  # flags from the planner at load time
    command: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # another engine's argv
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    ttl: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the default TTL
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    group: Mapped[str | None] = mapped_column(String(128), nullable=True)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=0)
    max_queue: Mapped[int] = mapped_column(Integer, default=64)
    reserve: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)  # manual, per device
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    preload: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )  # start with the studio
    # llama-swap's per-model keys (migration 0009; see ``serving/configs.py``)
    unlisted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    use_model_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    strip_params: Mapped[list[str]] = mapped_column(JSON, default=list)
    set_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    check_endpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    start_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    cmd_stop: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    proxy: Mapped[str | None] = mapped_column(Text, nullable=True)
    group_swap: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    group_exclusive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    group_persistent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class MeasuredMemoryRow(Base):
    """What llama-server allocated for one load key, next to the estimate (``fit/measured.py``)."""

    __tablename__ = "measured_memory"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of ``spec``
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # model identity, engine build, flags, devices
    model: Mapped[str] = mapped_column(String(256))  # the configuration that loaded it (last)
    estimated: Mapped[dict[str, Any]] = mapped_column(JSON)  # device → category → bytes
    measured: Mapped[dict[str, Any]] = mapped_column(JSON)  # device → category → bytes (logged)
    mapped_extra: Mapped[int] = mapped_column(Integer, default=0)
    process: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # device → bytes (NVML peak)
    comparable: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    loads: Mapped[int] = mapped_column(Integer, default=1)
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
