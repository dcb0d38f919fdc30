"""``llamastudio search``, ``quants`` and ``pull``: the Hub, before and during download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from llamastudio.cli import foreign_cmd
from llamastudio.cli.context import hardware as machine
from llamastudio.cli.context import library, settings
from llamastudio.errors import InvalidInput
from llamastudio.hub.checkpoints import check_format
from llamastudio.hub.client import HubClient
from llamastudio.hub.detail import repo_detail
from llamastudio.hub.download import pull_files, select_files
from llamastudio.hub.library import LocalModel
from llamastudio.hub.quants import RepoFile
from llamastudio.hub.remote import HeaderCache
from llamastudio.hub.token import effective_token

MiB = 1 << 20
FormatOpt = Annotated[str, typer.Option("--format", help="gguf or safetensors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _size(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):,.2f} GiB"


def cli_client(ctx: typer.Context) -> HubClient:
    """A Hub client with the token from the environment or the studio's settings."""
    return HubClient(token=effective_token(settings(ctx).data_dir) or "")


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        ctx: typer.Context,
        query: Annotated[str, typer.Argument(help="Words to search for.")] = "",
        sort: Annotated[str, typer.Option(help="downloads, likes, trending or updated.")] = "downloads",
        limit: Annotated[int, typer.Option(help="How many repos.")] = 20,
        author: Annotated[str | None, typer.Option(help="Only this author's repos.")] = None,
        fmt: FormatOpt = "gguf",
        as_json: JsonOpt = False,
    ) -> None:
        """Search the Hub for GGUF models (or, with --format safetensors, transformers checkpoints)."""
        rows = cli_client(ctx).search(query, sort, limit, author, check_format(fmt) or "gguf")
        if as_json:
            typer.echo(json.dumps(rows, indent=1))
            return
        table = Table("repo", "downloads", "likes", "license", "updated")
        for r in rows:
            table.add_row(
                r["id"],
                f"{r['downloads']:,}",
                f"{r['likes']:,}",
                r["license"] or "-",
                (r["last_modified"] or "")[:10],
            )
        Console().print(table)

    @app.command()
    def quants(
        ctx: typer.Context,
        repo: Annotated[str, typer.Argument(help="owner/name")],
        hardware: Annotated[
            str | None, typer.Option(help="Hardware profile (default: this machine).")
        ] = None,
        revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
        fmt: Annotated[
            str | None,
            typer.Option(
                "--format", help="gguf or safetensors (default: GGUF when the repo has GGUF files)."
            ),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Every quant of a repo (or its safetensors checkpoint) with its size and whether it fits,
        read from file headers only."""
        client = cli_client(ctx)
        cache = HeaderCache(settings(ctx).header_cache_dir, client.token)
        detail = repo_detail(client, repo, revision, machine(ctx, hardware), cache, check_format(fmt))
        rows = detail["quants"]
        if as_json:
            typer.echo(json.dumps(detail, indent=1))
            return
        table = Table("quant", "size", "fit", "max context", "files")
        for r in rows:
            color = {"full": "green", "moe-offload": "yellow", "partial": "yellow", "no": "red"}.get(
                r["fit"], ""
            )
            table.add_row(
                r["quant"],
                _size(r["size"]),
                f"[{color}]{r['detail']}[/]" if color else r["detail"],
                f"{r['max_context']:,}" if r["max_context"] else "-",
                str(len(r["files"])),
            )
        Console().print(table)

    @app.command()
    def pull(
        ctx: typer.Context,
        spec: Annotated[str, typer.Argument(metavar="REPO[:QUANT]", help="e.g. Qwen/Qwen3-8B-GGUF:Q4_K_M")],
        file: Annotated[str | None, typer.Option(help="One file of the repo instead of a quant.")] = None,
        revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
    ) -> None:
        """Download a quant (all shards and its mmproj) into the Hugging Face cache, with progress."""
        repo, _, label = spec.partition(":")
        client = cli_client(ctx)
        _, files = client.files(repo, revision)
        wanted = select_files(repo, files, label or None, file)
        paths = _pull_with_bar(client, repo, revision or "main", wanted)
        for p in paths:
            typer.echo(str(p))


def _pull_with_bar(client: HubClient, repo: str, revision: str, files: list[RepoFile]) -> list[Path]:
    bars: dict[str, TaskID] = {}
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,  # bars are for people; a pipe or log gets the result lines
    ) as progress:
        for f in files:
            bars[f.path.rsplit("/", 1)[-1]] = progress.add_task(f.path.rsplit("/", 1)[-1], total=f.size)

        def on_progress(name: str, done: int, total: int) -> None:
            task = next((t for n, t in bars.items() if n in name or name in n), None)
            if task is not None:
                progress.update(task, completed=done, total=total or None)

        return pull_files(client, repo, revision, files, on_progress)


models_app = typer.Typer(help="Models on disk used in place.", no_args_is_help=True)


@models_app.command("add")
def models_add(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Argument(help="A .gguf file or a directory.")] = None,
    source: Annotated[
        str | None, typer.Option("--from", help="Add another tool's models in place: ollama or lmstudio.")
    ] = None,
    store: Annotated[Path | None, typer.Option("--path", help="With --from: its models directory.")] = None,
) -> None:
    """Add a GGUF file or a directory of them to the library (used in place, never copied), or
    every model of Ollama's or LM Studio's store (--from)."""
    if source is not None:
        foreign_cmd.add_from(ctx, source, store or path)
        return
    if path is None:
        raise InvalidInput("give a .gguf file or a directory, or --from ollama|lmstudio")
    found = library(ctx).add(path)
    for m in found:
        typer.echo(m.path)


def model_kind(m: LocalModel) -> str:
    """What a library model is for, in a word or two: chat (+ vision), embedding, rerank; a chat
    model without a chat template is a base model."""
    role = str(m.facts.get("role") or ("chat" if m.format == "gguf" else "checkpoint"))
    words = [role]
    if m.mmproj:
        words.append("vision")
    if role == "chat" and m.facts.get("chat_template") is False:
        words.append("no template (base)")
    return ", ".join(words)


def register_library(app: typer.Typer) -> None:
    @app.command("ls")
    def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Local models: the Hugging Face cache and added paths."""
        models = library(ctx).models()
        if as_json:
            typer.echo(json.dumps([m.to_json() for m in models], indent=1))
            return
        table = Table("model", "quant", "size", "arch", "params", "kind", "source")
        for m in models:
            params = m.facts.get("parameter_count") or 0
            table.add_row(
                m.id,
                m.quant,
                _size(m.size),
                m.facts.get("architecture", "?"),
                f"{params / 1e9:.2f} B" if params >= 1e8 else f"{params / 1e6:.1f} M",
                model_kind(m),
                m.source,
            )
        Console().print(table)

    @app.command("rm")
    def rm(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="A model id from `ls`, or an added path.")],
        delete_files: Annotated[bool, typer.Option(help="Also delete files of an added model.")] = False,
    ) -> None:
        """Remove a model: HF-cache files it owns are deleted; added paths are only forgotten."""
        for path in library(ctx).remove(model, delete_files):
            typer.echo(f"removed {path}")

    app.add_typer(models_app, name="models")
