"""``llamastudio estimate``, ``plan`` and ``analyze``: what a model costs and which flags fit."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.fit.estimator import Estimate, estimate
from llamastudio.fit.flags import parse_server_args
from llamastudio.gguf import GGUFModel, load_model
from llamastudio.hardware import Hardware
from llamastudio.hardware.profiles import resolve

MiB = 1024 * 1024
HardwareOpt = Annotated[
    str | None,
    typer.Option("--hardware", help="cpu, 2x24GiB, rtx3090,rtx4090, or a JSON file (default: this machine)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="GGUF file, split part or URL.")]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def open_model(location: str) -> GGUFModel:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_API_KEY")
    return load_model(location, token=token)


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f}" if n >= 1000 * MiB else f"{n / MiB:,.2f}"


def render_estimate(est: Estimate, hw: Hardware, console: Console) -> None:
    table = Table(title="memory per device [MiB]")
    for col in ("device", "model", "KV", "RS", "output", "compute", "total", "free", "layers"):
        table.add_column(col, justify="left" if col in ("device", "layers") else "right")
    free = {g.device_name: g.free for g in hw.gpus}
    for d in est.devices:
        avail = free.get(d.name, hw.ram_free)
        style = "red" if d.total > avail else None
        layers = f"{d.layers[0]}-{d.layers[-1]}" if d.layers else ""
        table.add_row(
            d.name,
            _mib(d.model),
            _mib(d.kv),
            _mib(d.rs),
            _mib(d.output),
            _mib(d.compute),
            _mib(d.total),
            _mib(avail),
            layers,
            style=style,
        )
    console.print(table)
    console.print("  ".join(f"{d.name}: {d.label}" for d in est.devices), highlight=False)
    c = est.context
    console.print(
        f"n_ctx {c.n_ctx}, n_ctx_seq {c.n_ctx_seq}, {c.n_seq} slot(s), {c.n_stream} stream(s)"
        f"{' (unified KV)' if c.unified else ''}, KV cells {c.kv_cells * c.n_stream}"
        + (f" + {c.kv_cells_swa * c.n_stream} SWA" if c.kv_cells_swa else "")
        + f", batch {c.n_batch}/{c.n_ubatch}, flash attention {'on' if c.flash_attn else 'off'}",
        highlight=False,
    )
    for note in est.notes:
        console.print(f"note: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command(context_settings=PASSTHROUGH)
    def estimate_cmd(
        ctx: typer.Context, model: ModelArg, hardware: HardwareOpt = None, as_json: JsonOpt = False
    ) -> None:
        """Memory per device for a model and llama-server flags (paste them after MODEL)."""
        flags = parse_server_args(list(ctx.args), keep_unknown=False)
        hw = resolve(hardware)
        est = estimate(open_model(model), flags, hw.gpus)
        if as_json:
            out: dict[str, Any] = est.to_json() | {"hardware": hw.to_json(), "args": flags.to_args()}
            typer.echo(json.dumps(out, indent=1))
        else:
            render_estimate(est, hw, Console())

    estimate_cmd.__name__ = "estimate"
    app.registered_commands[-1].name = "estimate"
