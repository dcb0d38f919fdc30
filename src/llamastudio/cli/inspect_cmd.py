"""``llamastudio inspect PATH_OR_URL``: what a GGUF model is, read from its header only."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llamastudio.gguf import ModelFacts, facts_from_model, load_model
from llamastudio.hub.token import check_token

MiB = 1024 * 1024


def _fmt_bytes(n: int) -> str:
    return f"{n / MiB:,.2f} MiB" if n < 1024 * MiB else f"{n / MiB / 1024:,.2f} GiB"


def _fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def render(facts: ModelFacts, console: Console) -> None:
    summary = Table(title=f"{facts.general.get('name', facts.architecture)}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows: list[tuple[str, object]] = [
        ("architecture", facts.architecture),
        ("parameters", _fmt_count(facts.parameter_count)),
        ("file size", f"{_fmt_bytes(facts.file_size)} in {facts.split_count} file(s)"),
        ("file type", facts.file_type_name),
        ("context length", facts.context_length),
        ("layers", facts.block_count),
        ("embedding", facts.embedding_length),
        ("feed forward", facts.feed_forward_length),
        ("heads / kv heads", f"{facts.head_count} / {facts.head_count_kv}"),
        ("head dim k / v", f"{facts.key_length} / {facts.value_length}"),
        ("vocab", facts.vocab_size),
    ]
    if facts.expert_count:
        rows.append(("experts (used)", f"{facts.expert_count} ({facts.expert_used_count})"))
    if facts.sliding_window:
        rows.append(("sliding window", f"{facts.sliding_window} pattern {facts.sliding_window_pattern}"))
    if facts.kv_lora_rank:
        rows.append(("MLA kv_lora_rank", facts.kv_lora_rank))
    if facts.ssm_state_size:
        rows.append(
            (
                "SSM state / inner / conv",
                f"{facts.ssm_state_size} / {facts.ssm_inner_size} / {facts.ssm_conv_kernel}",
            )
        )
    rows.append(("purpose", facts.role + (f" (pooling {facts.pooling})" if facts.pooling else "")))
    template = (
        f"yes ({facts.template_family})" if facts.chat_template else "no: a base model, use completions"
    )
    rows.append(("chat template", template + (", renders tools" if facts.tools else "")))
    for key in ("license", "size_label", "basename"):
        if key in facts.general:
            rows.append((key, facts.general[key]))
    for k, v in rows:
        summary.add_row(k, "" if v is None else str(v))
    console.print(summary)

    quant = Table(title="quant mix")
    quant.add_column("ggml type")
    quant.add_column("bytes", justify="right")
    quant.add_column("share", justify="right")
    total = sum(facts.quant_bytes.values()) or 1
    for name, n in facts.quant_bytes.items():
        quant.add_row(name, _fmt_bytes(n), f"{100 * n / total:.1f}%")
    console.print(quant)
    if facts.layer_bytes:
        lo, hi = min(facts.layer_bytes), max(facts.layer_bytes)
        other = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in facts.non_layer_bytes.items())
        console.print(f"layer size {_fmt_bytes(lo)} – {_fmt_bytes(hi)}; non-layer: {other}")


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        location: Annotated[str, typer.Argument(metavar="PATH_OR_URL", help="GGUF file, split part or URL.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
        token: Annotated[
            str | None, typer.Option(help="Bearer token for URLs (default: HF_TOKEN from the environment).")
        ] = None,
    ) -> None:
        """Read a GGUF model's header (never its tensor data) and summarise it."""
        token = token or os.environ.get("HF_TOKEN") or os.environ.get("HUGGINGFACE_API_KEY")
        if token:  # one `error:` line for a token that cannot go into a header, not a traceback
            check_token(token, "the token (--token, $HF_TOKEN or $HUGGINGFACE_API_KEY)")
        facts = facts_from_model(load_model(location, token=token))
        if as_json:
            typer.echo(json.dumps(facts.to_json(), indent=1, default=str))
        else:
            render(facts, Console())
