"""``llamastudio peers ls|add|rm``: remote OpenAI-compatible servers whose models the gateway
routes to — a client of the studio serving the data directory (``/api/peers``): the peers are
health-checked by that studio, so one must run."""

from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.cli.client import call

app = typer.Typer(
    help="Peers: other servers whose models the gateway lists and routes to.", no_args_is_help=True
)


@app.command("ls")
def ls(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Every peer: URL, health, the models routed to it (API keys are never shown)."""
    rows = call(ctx, "GET", "/api/peers")
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table("peer", "url", "key", "state", "models")
    for p in rows:
        state = "available" if p["available"] else f"unavailable ({p['reason']})"
        models = ", ".join(p["models"])
        table.add_row(
            p["name"] + (" (llama-swap)" if p["imported"] else ""),
            p["url"],
            "yes" if p["has_key"] else "",
            state,
            models,
        )
    Console(width=200).print(table)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for it (shown as its models' owned_by).")],
    url: Annotated[str, typer.Argument(help="Its base URL, e.g. http://10.0.0.5:2000 (the /v1 is added).")],
    key: Annotated[str | None, typer.Option("--key", help="Its API key (sent to it, never shown).")] = None,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Only these model ids, comma-separated (default: all it lists)."),
    ] = None,
) -> None:
    """Add (or replace) a peer; it is health-checked at once."""
    body = {
        "name": name,
        "url": url,
        "api_key": key,
        "models": [m.strip() for m in (models or "").split(",") if m.strip()],
    }
    p = call(ctx, "POST", "/api/peers", json=body)
    state = "available" if p["available"] else f"unavailable: {p['reason']}"
    typer.echo(f"peer {p['name']} ({p['url']}) is {state}; models: {', '.join(p['models']) or 'none'}")


@app.command("rm")
def rm(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The peer to remove.")]) -> None:
    """Remove a peer (its models leave the gateway's list)."""
    call(ctx, "DELETE", f"/api/peers/{quote(name, safe='')}")
    typer.echo(f"removed peer {name}")
