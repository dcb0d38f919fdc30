"""Entry point: the Typer app, global options, and the one place errors become exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from llamastudio import __version__
from llamastudio.cli import (
    engines_cmd,
    fit_cmds,
    hub_cmd,
    inspect_cmd,
    peers_cmd,
    serve_cmd,
    serving_cmd,
    worker_cmd,
)
from llamastudio.config import Settings
from llamastudio.errors import InvalidInput, StudioError

app = typer.Typer(
    name="llamastudio",
    help="llama.cpp Studio: models, engines and one OpenAI-compatible endpoint for local LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def load_settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from env, overridden by global and command flags that were given."""
    base: dict[str, Any] = {k: v for k, v in (ctx.obj or {}).items() if k != "load_settings"}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**base)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llamastudio {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data directory (env LLAMASTUDIO_DATA_DIR).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="Studio to talk to (env LLAMASTUDIO_URL; default: the one serving the data dir)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    ctx.obj = {"data_dir": data_dir} if data_dir else {}
    if url:
        ctx.obj["url"] = url
    ctx.obj["load_settings"] = load_settings


serve_cmd.register(app, load_settings)
inspect_cmd.register(app)
fit_cmds.register(app)
hub_cmd.register(app)
hub_cmd.register_library(app)
serving_cmd.register(app)
app.add_typer(engines_cmd.app, name="engines")
app.add_typer(peers_cmd.app, name="peers")
worker_cmd.register(app)  # llamastudio worker; llamastudio workers add|ls|rm


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a StudioError becomes one line on stderr and its exit code, never a traceback.

    Usage errors (unknown command, bad option) are click's own: a usage line and exit code 2.
    """
    try:
        app(args=argv)
    except StudioError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
