"""``llamastudio serve``: run the UI + management API and the gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from llamastudio.config import Settings


def register(app: typer.Typer, load_settings: Callable[..., Settings]) -> None:
    @app.command()
    def serve(
        ctx: typer.Context,
        host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
        port: Annotated[int | None, typer.Option(help="Port of the UI + API (default 8080).")] = None,
        gateway_port: Annotated[
            int | None, typer.Option(help="Port of the OpenAI-compatible gateway (default 2000).")
        ] = None,
    ) -> None:
        """Run the studio: UI + REST API and the OpenAI-compatible gateway."""
        from llamastudio.server import run

        run(load_settings(ctx, host=host, port=port, gateway_port=gateway_port))
