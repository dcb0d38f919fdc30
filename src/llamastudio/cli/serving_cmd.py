"""Serving from the CLI: ``ps``, ``run``, ``stop`` talk to the studio serving the data directory
(``cli/client.py`` finds it); ``models config|show|unconfig|import|export`` go through that
studio's API while it runs (one writer of the database), and through the same service façade in
this process when no studio runs (``services/local.py``: nothing is started or stopped)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.cli.client import call, running_studio, target
from llamastudio.cli.context import hardware as machine
from llamastudio.cli.context import settings
from llamastudio.cli.hub_cmd import models_app
from llamastudio.errors import InvalidInput
from llamastudio.fsutil import write_atomic
from llamastudio.services import StudioService
from llamastudio.services.local import offline_service
from llamastudio.serving.configs import ModelConfig

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def register(app: typer.Typer) -> None:
    @app.command()
    def ps(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Running models: state, engine, memory per device, requests in flight, idle time."""
        rows = call(ctx, "GET", "/api/running")
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        table = Table("model", "state", "engine", "memory", "in flight", "idle", "pid")
        for m in rows:
            mem = ", ".join(f"{dev} {_mib(n)}" for dev, n in m["memory"].items())
            idle = "" if m["idle_s"] is None else f"{m['idle_s']:.0f}s"
            state = m["state"] + (f" ({m['reason']})" if m.get("reason") else "")
            table.add_row(
                m["name"], state, m["engine"] or "", mem, str(m["in_flight"]), idle, str(m["pid"] or "")
            )
        Console(width=200).print(table)

    @app.command("run")
    def run(
        ctx: typer.Context, model: Annotated[str, typer.Argument(help="Model name, alias or library id.")]
    ) -> None:
        """Start a model (waits until it is ready) and print the endpoint to use."""
        studio = target(ctx)
        st = call(ctx, "POST", f"/api/models/{quote(model)}/start", studio)
        endpoint = studio.gateway_url + "/v1"
        typer.echo(f"{st['name']} is {st['state']} — OpenAI endpoint: {endpoint} (model: {st['name']})")
        body = json.dumps({"model": st["name"], "messages": [{"role": "user", "content": "Hello"}]})
        typer.echo(f"curl {endpoint}/chat/completions -H 'Content-Type: application/json' -d '{body}'")

    @app.command("stop")
    def stop(
        ctx: typer.Context,
        model: Annotated[str | None, typer.Argument(help="Model to stop.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Stop every running model.")] = False,
    ) -> None:
        """Stop a model once its requests in flight have finished (or every model with --all)."""
        if all_:
            for name in call(ctx, "POST", "/api/running/unload-all")["unloaded"]:
                typer.echo(f"stopped {name}")
            return
        if not model:
            raise InvalidInput("name a model to stop, or pass --all")
        st = call(ctx, "POST", f"/api/models/{quote(model)}/stop")
        typer.echo(f"{st['name']} is {st['state']}")


T = TypeVar("T")


def _offline(ctx: typer.Context, op: Callable[[StudioService], Coroutine[Any, Any, T]]) -> T:
    """Run one façade operation on the data directory itself (no studio serves it)."""
    service = offline_service(settings(ctx), machine(ctx))
    return asyncio.run(op(service))


def _view(ctx: typer.Context, name: str) -> dict[str, Any]:
    """A model's configuration view (``GET /api/models/{name}/config``): from the running studio,
    else from the data directory; its ``error`` raised (why it cannot run)."""
    studio = running_studio(ctx)
    if studio is not None:
        view: dict[str, Any] = call(ctx, "GET", f"/api/models/{quote(name)}/config", studio)
    else:
        view = _offline(ctx, lambda svc: svc.get_config(name)).model_dump(mode="json")
    if view.get("error"):
        raise InvalidInput(view["error"])
    return view


@models_app.command("config", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def config(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The gateway's name for the model.")],
    model: Annotated[str | None, typer.Option(help="Library id or GGUF path (default: NAME).")] = None,
    auto: Annotated[
        bool, typer.Option(help="Let the planner choose flags (given flags are its base).")
    ] = False,
    alias: Annotated[list[str] | None, typer.Option(help="Another name (repeatable).")] = None,
    ttl: Annotated[float | None, typer.Option(help="Idle seconds before unloading (0 = never).")] = None,
    pin: Annotated[bool, typer.Option(help="Never unload or evict it.")] = False,
    group: Annotated[str | None, typer.Option(help="Exclusive group: members never run together.")] = None,
    max_concurrency: Annotated[int, typer.Option(help="Requests in flight at most (0 = no limit).")] = 0,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a load at most.")] = 64,
    engine: Annotated[
        str | None, typer.Option(help="Engine id (default: the model's pin, else default).")
    ] = None,
    preload: Annotated[bool, typer.Option(help="Start it when the studio starts.")] = False,
) -> None:
    """Configure how a model is served; llama-server flags follow after `--`."""
    cfg = ModelConfig(
        name=name,
        model=model or name,
        engine_id=engine,
        args=list(ctx.args),
        auto=auto,
        aliases=alias or [],
        ttl=ttl,
        pinned=pin,
        group=group,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        preload=preload,
    )
    studio = running_studio(ctx)
    if studio is not None:  # the running studio stores it (one writer) and applies it
        body = cfg.to_json()
        body.pop("name", None)
        view = call(ctx, "PUT", f"/api/models/{quote(name)}/config", studio, json=body)
    else:
        view = _offline(ctx, lambda svc: svc.put_config(cfg)).model_dump(mode="json")
    if view.get("error"):
        raise InvalidInput(view["error"])
    typer.echo(" ".join(view["prepared"]["argv"]))


@models_app.command("show")
def show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """A model's configuration, the exact command and its memory per device."""
    view = _view(ctx, name)
    cfg, p = view["config"], view["prepared"]
    if as_json:
        typer.echo(json.dumps({"config": cfg, "prepared": p}, indent=1))
        return
    typer.echo(f"{cfg['name']}{' (library default)' if not cfg['configured'] else ''}: {cfg['model']}")
    typer.echo("command: " + " ".join(p["argv"]))
    typer.echo("memory:  " + ", ".join(f"{d} {_mib(n)}" for d, n in p["reserve"].items()))
    for reason in p["reasons"]:
        typer.echo(f"  - {reason}")


@models_app.command("unconfig")
def unconfig(ctx: typer.Context, name: str) -> None:
    """Delete a stored configuration (a library model is then served with defaults again)."""
    studio = running_studio(ctx)
    if studio is not None:
        call(ctx, "DELETE", f"/api/models/{quote(name)}/config", studio)
        return
    _offline(ctx, lambda svc: svc.delete_config(name))


FormatOpt = Annotated[str, typer.Option("--format", help="llama-swap (config.yaml) or preset (INI).")]


@models_app.command("import")
def import_(ctx: typer.Context, file: Path, fmt: FormatOpt = "") -> None:
    """Import llama-swap config.yaml or llama-server --models-preset INI configurations."""
    try:
        text = file.read_text()
    except OSError as exc:
        raise InvalidInput(f"{file}: {exc.strerror}") from exc
    fmt = fmt or ("preset" if file.suffix.lower() == ".ini" else "llama-swap")
    studio = running_studio(ctx)
    if studio is not None:
        done = call(ctx, "POST", "/api/served/import", studio, json={"format": fmt, "text": text})
    else:
        done = _offline(ctx, lambda svc: svc.import_configs(fmt, text)).to_json()
    for name in done["imported"]:
        typer.echo(f"imported {name}")
    for item in done.get("ignored") or []:  # kept for export, not applied: said, never dropped
        typer.echo(f"ignored {item['key']}: {item['why']}", err=True)


@models_app.command("export")
def export(
    ctx: typer.Context,
    fmt: FormatOpt = "llama-swap",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default stdout).")
    ] = None,
) -> None:
    """Export stored configurations as llama-swap config.yaml or a --models-preset INI."""
    studio = running_studio(ctx)
    if studio is not None:
        text = str(call(ctx, "GET", "/api/served/export", studio, params={"format": fmt}))
    else:
        text = _offline(ctx, lambda svc: svc.export_configs(fmt))
    if output is None:
        typer.echo(text, nl=False)
        return
    write_atomic(output, text.encode())
