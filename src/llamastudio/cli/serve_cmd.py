"""``llamastudio serve``: run the UI + management API and the gateway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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
        model: Annotated[
            str | None,
            typer.Option(
                help="One-model mode: org/repo:QUANT (or org/repo: the largest quant that fits) to "
                "download, load and pin at start (env MODEL)."
            ),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="A llama-swap config.yaml to serve, kept in sync: re-imported whenever it "
                "changes; an invalid version is reported and the previous one keeps serving "
                "(env LLAMASTUDIO_CONFIG_FILE).",
            ),
        ] = None,
        insecure: Annotated[
            bool,
            typer.Option(
                "--insecure",
                help="Allow a non-loopback --host without LLAMASTUDIO_API_KEY and "
                "LLAMASTUDIO_GATEWAY_API_KEY (anyone on the network can then drive the studio).",
            ),
        ] = False,
    ) -> None:
        """Run the studio: UI + REST API and the OpenAI-compatible gateway.

        On an address other than loopback it refuses to start (exit 2) unless both API keys are
        set, or --insecure is given. With --model (or MODEL / MODEL_PATH in the environment) it
        serves that one model: downloaded if missing, loaded and pinned before /health says ok;
        a model that cannot fit this machine ends the start (exit 3)."""
        from llamastudio.server import run

        settings = load_settings(
            ctx,
            host=host,
            port=port,
            gateway_port=gateway_port,
            model=model,
            config_file=config,
            insecure=True if insecure else None,
        )
        run(settings)
