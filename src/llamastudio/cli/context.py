"""What subcommands need from the global options: the settings, and the database they name."""

from __future__ import annotations

import typer

from llamastudio.config import Settings
from llamastudio.hardware.devices import Hardware
from llamastudio.store import Database


def settings(ctx: typer.Context) -> Settings:
    """Settings from env and global flags, with the data directory created."""
    loaded: Settings = ctx.obj["load_settings"](ctx)
    loaded.ensure_dirs()
    return loaded


def database(ctx: typer.Context) -> Database:
    return Database(settings(ctx).db_path)


def hardware(ctx: typer.Context, override: str | None = None) -> Hardware:
    """The hardware to plan for: ``--hardware``, else ``LLAMASTUDIO_HARDWARE``, else this machine
    (the one rule the studio's runtime and Hub fit badges use too)."""
    from llamastudio.hardware.profiles import resolve

    return resolve(override or settings(ctx).hardware)
