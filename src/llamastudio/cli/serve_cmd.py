"""``llamastudio serve``: run the UI + management API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from llamastudio.config import Settings


def register(app: typer.Typer, load_settings: Callable[..., Settings]) -> None:
    @app.command()
    def serve(
        ctx: typer.Context,
        host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    ) -> None:
        """Run the studio service (UI + REST API)."""
        import uvicorn

        from llamastudio.api.app import create_app

        settings = load_settings(ctx, host=host, port=port)
        application: Any = create_app(settings)
        uvicorn.run(application, host=settings.host, port=settings.port, log_level=settings.log_level)
