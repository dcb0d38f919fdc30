"""What subcommands need from the global options: the settings, the hardware to plan for, and
the repositories of the data directory they name (opened by ``services/local.py``)."""

from __future__ import annotations

import typer

from llamastudio.config import Settings
from llamastudio.engines.registry import EngineRegistry
from llamastudio.hardware.devices import Hardware
from llamastudio.hub.library import Library
from llamastudio.services import local


def settings(ctx: typer.Context) -> Settings:
    """Settings from env and global flags, with the data directory created."""
    loaded: Settings = ctx.obj["load_settings"](ctx)
    loaded.ensure_dirs()
    return loaded


def library(ctx: typer.Context) -> Library:
    return local.library(settings(ctx))


def engines(ctx: typer.Context) -> EngineRegistry:
    return local.engines(settings(ctx))


def hardware(ctx: typer.Context, override: str | None = None) -> Hardware:
    """The hardware to plan for: ``--hardware``, else ``LLAMASTUDIO_HARDWARE``, else this machine
    (the one rule the studio's runtime and Hub fit badges use too)."""
    from llamastudio.hardware.profiles import resolve

    return resolve(override or settings(ctx).hardware)
