"""``llamastudio models add --from ollama|lmstudio [--path DIR]``: another tool's models used in
place — through the studio's API while one serves the data directory, else on the data
directory itself (``services/foreign.py`` either way)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer

from llamastudio.cli.client import call, running_studio
from llamastudio.cli.context import hardware, settings
from llamastudio.errors import InvalidInput
from llamastudio.hub.foreign import SOURCES
from llamastudio.services.foreign import add_foreign
from llamastudio.services.local import offline_service


def add_from(ctx: typer.Context, source: str, path: Path | None) -> None:
    if source not in SOURCES:
        raise InvalidInput(f"--from {source!r}: one of {', '.join(SOURCES)}")
    root = path.expanduser().resolve() if path is not None else None
    studio = running_studio(ctx)
    if studio is not None:
        body = {"source": source, "path": str(root) if root else None}
        done: dict[str, Any] = call(ctx, "POST", "/api/library/foreign", studio, json=body)
    else:
        service = offline_service(settings(ctx), hardware(ctx))
        done = asyncio.run(add_foreign(service, source, root)).model_dump(mode="json")
    for m in done["models"]:
        typer.echo(f"added {m['name']}  {m['path']}" + (f"  {' '.join(m['args'])}" if m["args"] else ""))
        for note in m["notes"]:
            typer.echo(f"  note: {note}")
    for s in done["skipped"]:
        typer.echo(f"skipped {s['what']}: {s['why']}", err=True)
