"""``llamastudio worker`` (run an RPC worker on this host) and ``llamastudio workers
add|ls|rm`` (register workers with the studio serving the data directory: ``/api/workers``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.cli.client import call
from llamastudio.cli.context import engines, settings
from llamastudio.errors import Conflict, InvalidInput
from llamastudio.workers.status import serve
from llamastudio.workers.worker import (
    Supervisor,
    WorkerState,
    check_listen,
    find_binary,
    parse_listen,
    port_free,
    probe_devices,
)

app = typer.Typer(help="RPC workers registered with the studio (llama.cpp --rpc).", no_args_is_help=True)


def worker(
    ctx: typer.Context,
    listen: Annotated[str, typer.Option("--listen", help="ADDR:PORT for rpc-server (loopback/private).")],
    devices: Annotated[
        str | None, typer.Option("--devices", help="Devices to expose, comma-separated (e.g. CUDA0,CUDA1).")
    ] = None,
    mem: Annotated[
        int | None, typer.Option("--mem", min=1, help="MiB per device the studio may plan on this worker.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", envvar="LLAMASTUDIO_WORKER_KEY", help="Key of the status endpoint."),
    ] = None,
    status_port: Annotated[
        int | None, typer.Option("--status-port", help="Status endpoint's port (default: the RPC port + 1).")
    ] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="Engine id (default: the default).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1, help="CPU threads.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a public listen address (rpc-server has no auth).")
    ] = False,
) -> None:
    """Run llama.cpp's rpc-server here, restarted if it dies, with a status endpoint beside it.

    rpc-server has no authentication: the key protects only the status endpoint. Firewall the RPC
    port to the studio's host.
    """
    host, port = parse_listen(listen)
    check_listen(host, insecure)
    sport = status_port or port + 1
    for p in (port, sport):
        if not port_free(host, p):
            raise Conflict(f"port {p} on {host} is in use")
    binary = find_binary(engines(ctx), engine)
    wanted = [d.strip() for d in (devices or "").split(",") if d.strip()]
    found = probe_devices(binary.path, wanted or None)
    if not found:
        raise InvalidInput(f"{binary.path} finds no devices on this host")
    if not key:
        key = secrets.token_urlsafe(24)
        typer.echo(f"worker key (give it to `llamastudio workers add`): {key}")
    s = settings(ctx)
    log_path = s.logs_dir / f"rpc-server-{port}.log"
    state = WorkerState(
        host, port, binary, devices=wanted, mem_mib=mem, threads=threads or os.cpu_count() or 1
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    names = ", ".join(f"{d['name']} ({d['free_mib']} MiB free)" for d in found)
    typer.echo(
        f"rpc-server {binary.version} on {host}:{port} (devices: {names}); status on "
        f"http://{host}:{sport}/status; log {log_path}"
    )
    asyncio.run(serve(state, host, sport, key, Supervisor(state, log_path)))


def register(root: typer.Typer) -> None:
    root.command("worker")(worker)
    root.add_typer(app, name="workers")


@app.command("ls")
def ls(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Every registered worker: health, build, devices, link speed (keys are never shown)."""
    rows = call(ctx, "GET", "/api/workers")
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table("worker", "state", "build", "devices", "link")
    for w in rows:
        state = "available" if w["available"] else f"unavailable ({w['reason']})"
        devs = ", ".join(f"{d['name']} {d['offered_mib']} MiB" for d in w["devices"])
        link = f"{w['link_mib_s']:.0f} MiB/s" if w.get("link_mib_s") else ""
        table.add_row(w["endpoint"], state, w.get("version") or "", devs, link)
    Console(width=200).print(table)


@app.command("add")
def add(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Argument(help="HOST:PORT of its rpc-server.")],
    key: Annotated[str, typer.Option("--key", help="The worker's key (stored, never shown).")],
    status_port: Annotated[
        int | None, typer.Option("--status-port", help="Its status port (default: the RPC port + 1).")
    ] = None,
) -> None:
    """Register a worker; it is health-checked and its link measured at once."""
    body = {"endpoint": endpoint, "key": key, "status_port": status_port}
    w = call(ctx, "POST", "/api/workers", json=body)
    state = "available" if w["available"] else f"unavailable: {w['reason']}"
    link = f"; link {w['link_mib_s']:.0f} MiB/s" if w.get("link_mib_s") else ""
    typer.echo(f"worker {w['endpoint']} is {state}{link}")


@app.command("rm")
def rm(ctx: typer.Context, endpoint: Annotated[str, typer.Argument(help="HOST:PORT to remove.")]) -> None:
    """Unregister a worker."""
    call(ctx, "DELETE", "/api/workers", params={"endpoint": endpoint})
    typer.echo(f"removed worker {endpoint}")
