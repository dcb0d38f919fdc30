"""``llamastudio estimate``, ``plan`` and ``analyze``: what a model costs and which flags fit."""

from __future__ import annotations

import json
import os
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.cli.context import engines as engine_registry
from llamastudio.cli.context import hardware as machine
from llamastudio.cli.context import settings as studio_settings
from llamastudio.engines import fitparams
from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.companions import Companions
from llamastudio.fit.estimator import Estimate, estimate
from llamastudio.fit.fitparams import TOLERANCE, FitCheck
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.planner import plan as make_plan
from llamastudio.gguf import GGUFModel, facts_from_model, load_model
from llamastudio.hardware import Hardware
from llamastudio.services.measured import measured_estimate

MiB = 1024 * 1024
HardwareOpt = Annotated[
    str | None,
    typer.Option("--hardware", help="cpu, 2x24GiB, rtx3090,rtx4090, or a JSON file (default: this machine)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="GGUF file, split part or URL.")]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
CheckOpt = Annotated[
    bool,
    typer.Option(
        "--check",
        help="Also run llama.cpp's own llama-fit-params on the local MODEL with the same flags and "
        "print both side by side.",
    ),
]
CheckWithOpt = Annotated[
    Path | None,
    typer.Option("--check-with", help="The llama-fit-params binary (default: the default engine's)."),
]


class Goal(StrEnum):
    balanced = "balanced"
    max_context = "max-context"
    max_speed = "max-speed"


def open_model(location: str) -> GGUFModel:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_API_KEY")
    return load_model(location, token=token)


def _mib(n: int) -> str:
    return f"{n / MiB:,.0f}" if n >= 1000 * MiB else f"{n / MiB:,.2f}"


def companions_of(flags: ServerFlags, model: GGUFModel) -> Companions:
    """The projector (``-mm``) and draft model (``-md``) the flags name: local files or Hub URLs,
    read like MODEL (headers only), checked against the model as llama-server would."""
    extra = Companions(
        open_model(flags.mmproj) if flags.mmproj else None,
        open_model(flags.draft_model) if flags.draft_model else None,
    )
    extra.check(model, facts_from_model(model).embedding_length)
    return extra


def _console() -> Console:
    """A terminal's own width; piped or redirected, wide enough that no column header is cut
    (rich assumes 80 columns there)."""
    return Console() if sys.stdout.isatty() else Console(width=140)


def render_estimate(est: Estimate, hw: Hardware, console: Console) -> None:
    table = Table(title="memory per device [MiB]")
    extra = [c for c in ("mmproj", "draft") if any(getattr(d, c) for d in est.devices)]
    for col in ("device", "model", "KV", "RS", "output", "compute", *extra, "total", "free", "layers"):
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
            *(_mib(getattr(d, c)) for c in extra),
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
        ctx: typer.Context,
        model: ModelArg,
        hardware: HardwareOpt = None,
        as_json: JsonOpt = False,
        check: CheckOpt = False,
        check_with: CheckWithOpt = None,
    ) -> None:
        """Memory per device for a model and llama-server flags (paste them after MODEL); every flag
        of llama-server b11434 is taken, and those that change memory unmodelled are named."""
        flags = parse_server_args(list(ctx.args), keep_unknown=False)
        if check and hardware:
            raise InvalidInput(
                "--check runs llama.cpp on this machine: it cannot be combined with --hardware"
            )
        hw = machine(ctx, hardware)
        gmodel = open_model(model)
        companions = companions_of(flags, gmodel)
        est = estimate(gmodel, flags, hw.gpus, companions=companions)
        # what the studio of this data directory measured for the same load, if it ran it
        used = [c for c in (companions.mmproj, companions.draft) if c is not None]
        measured = measured_estimate(studio_settings(ctx), gmodel, flags, est, used)
        fit_check = None
        if check:
            binary = check_with or _fit_params_binary(ctx)
            fit_check = fitparams.check(binary, gmodel, Path(model), flags, hw.gpus, server=est)
        if as_json:
            out: dict[str, Any] = est.to_json() | {"hardware": hw.to_json(), "args": flags.to_args()}
            out["measured"] = measured.model_dump(mode="json") if measured else None
            if fit_check is not None:
                out["check"] = fit_check.to_json()
            typer.echo(json.dumps(out, indent=1))
        else:
            console = _console()
            render_estimate(est, hw, console)
            for line in measured.summary if measured else []:
                console.print(f"measured by the studio: {line}", highlight=False)
            if fit_check is not None:
                render_check(fit_check, console)

    estimate_cmd.__name__ = "estimate"
    app.registered_commands[-1].name = "estimate"
    register_plan(app)


def _fit_params_binary(ctx: typer.Context) -> Path:
    engine = engine_registry(ctx).default()
    path = None
    if engine is not None and engine.family == "llama.cpp":
        path = Path(engine.binaries["llama-fit-params"]) if "llama-fit-params" in engine.binaries else None
        path = path if path and path.is_file() else fitparams.find_binary(engine.server)
    if path is None:
        raise InvalidInput(
            "--check needs llama.cpp's llama-fit-params: the default engine has none "
            "(build or install one, or pass --check-with PATH)"
        )
    return path


def render_check(fc: FitCheck, console: Console) -> None:
    table = Table(title="llama.cpp's own projection (llama-fit-params) [MiB]")
    for col in ("device", "category", "studio", "llama-fit-params", "its log", "diff", "agree"):
        table.add_column(col, justify="left" if col in ("device", "category") else "right")
    for r in fc.rows:
        row = r.to_json()
        precise = r.theirs_precise_mib
        table.add_row(
            r.device,
            r.category,
            f"{r.ours / MiB:,.2f}",
            str(r.theirs_mib),
            "" if precise is None else f"{precise:,.2f}",
            f"{row['diff_mib']:+,.2f}",
            "yes" if r.agree else "[red]no[/]",
        )
    console.print(table)
    console.print(
        "studio column: the studio's estimate of what llama-fit-params counts (no mmap, its context "
        f"defaults); tolerance: {TOLERANCE}",
        highlight=False,
    )
    if not fc.report.log_complete:
        console.print(
            "its log came back cut (llama.cpp loses a log's tail at exit) in every try: compared "
            "in whole MiB only",
            highlight=False,
        )
    console.print(shlex.join(fc.report.argv), highlight=False, soft_wrap=True)
    for line in fc.differences:
        console.print(f"• {line}", highlight=False)


def parse_reserve(text: str | None, hw: Hardware) -> dict[str, int]:
    """``--reserve 4096,2048[,8192]``: MiB already taken on each GPU in order (one more: the host)."""
    if not text:
        return {}
    try:
        values = [int(float(x) * MiB) for x in text.split(",")]
    except ValueError:
        raise InvalidInput(f"--reserve: expected MiB per device like 4096,2048, got {text!r}") from None
    names = [g.device_name for g in hw.gpus] + ["CPU"]
    if len(values) > len(names) or any(v < 0 for v in values):
        raise InvalidInput(f"--reserve: {len(values)} values for {len(names)} devices ({', '.join(names)})")
    return dict(zip(names, values, strict=False))


def register_plan(app: typer.Typer) -> None:
    @app.command(context_settings=PASSTHROUGH)
    def plan(
        ctx: typer.Context,
        model: ModelArg,
        hardware: HardwareOpt = None,
        goal: Annotated[Goal, typer.Option(help="What to favour.")] = Goal.balanced,
        ctx_size: Annotated[int | None, typer.Option("--ctx", help="Fixed context size.")] = None,
        parallel: Annotated[int | None, typer.Option(help="Parallel slots (-np).")] = None,
        reserve: Annotated[
            str | None, typer.Option(help="MiB already used per GPU by other models, e.g. 4096,0 (+ host).")
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Smart Auto: the llama-server flags that fit, with a reason for each choice."""
        base = parse_server_args(list(ctx.args), keep_unknown=False)
        hw = machine(ctx, hardware)
        gmodel = open_model(model)
        result = make_plan(
            gmodel,
            hw,
            goal.value,
            ctx_size,
            parallel,
            parse_reserve(reserve, hw),
            base,
            companions_of(base, gmodel),
        )
        if as_json:
            typer.echo(json.dumps(result.to_json() | {"hardware": hw.to_json()}, indent=1))
            return
        console = _console()
        for reason in result.reasons:
            console.print(f"• {reason}", highlight=False)
        for warning in result.warnings:
            console.print(f"[yellow]! {warning}[/]", highlight=False)
        render_estimate(result.estimate, hw, console)
        console.print(shlex.join(result.command()), highlight=False, soft_wrap=True)

    @app.command()
    def analyze(
        ctx: typer.Context, model: ModelArg, hardware: HardwareOpt = None, as_json: JsonOpt = False
    ) -> None:
        """Layers, GPUs by free memory, a layer-to-GPU plan and its --tensor-split."""
        hw = machine(ctx, hardware)
        gmodel = open_model(model)
        report = analysis(gmodel, hw)
        if as_json:
            typer.echo(json.dumps(report, indent=1))
            return
        console = Console()
        for line in report["lines"]:
            console.print(line, highlight=False, soft_wrap=True)


def analysis(model: GGUFModel, hw: Hardware) -> dict[str, Any]:
    """The orchestrator view: per-GPU layer ranges and usage from the planner's balanced plan."""
    facts = facts_from_model(model)
    result = make_plan(model, hw)
    layers = facts.layer_bytes or [0]
    lines = [
        f"model: {facts.general.get('name', facts.architecture)} — {facts.file_size / MiB:,.0f} MiB, "
        f"{facts.block_count} layers, layer size {min(layers) / MiB:,.1f}–{max(layers) / MiB:,.1f} MiB",
        "GPUs by free memory:" if hw.gpus else "no GPU: CPU only",
    ]
    for g in sorted(hw.gpus, key=lambda g: -g.free):
        lines.append(f"  GPU {g.index}: {g.name} — {g.free / MiB:,.0f} / {g.total / MiB:,.0f} MiB free")
    plan_rows = []
    for d in result.estimate.devices:
        budget = result.budgets.get(d.name, 0)
        avail = next((g.free for g in hw.gpus if g.device_name == d.name), hw.ram_free)
        span = f"#{d.layers[0]}-{d.layers[-1]}" if d.layers else "-"
        label = f"GPU {d.name.removeprefix('CUDA')}" if d.name != "CPU" else "CPU"
        pct = 100 * d.total / avail if avail else 0.0
        usage = f"{d.total / MiB:,.0f} / {avail / MiB:,.0f} MiB ({pct:.1f}%)"
        lines.append(f"{label}: {len(d.layers)} layers ({span}) | {usage}")
        plan_rows.append(
            {"device": d.name, "layers": d.layers, "bytes": d.total, "free": avail, "budget": budget}
        )
    gpu_layers = [len(d.layers) for d in result.estimate.devices[:-1]]
    ts = ",".join(str(n) for n in gpu_layers) if len(gpu_layers) > 1 else ""
    if ts:
        lines.append(f"--tensor-split {ts}")
    lines.append(shlex.join(result.command()))
    return {"lines": lines, "plan": plan_rows, "tensor_split": ts, "args": result.flags.to_args()}
