"""llama-server argv for one model on one engine, using only flags that engine's ``--help`` lists."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import spell
from llamastudio.fit.flags import ServerFlags

_NUMBER = re.compile(r"^-(\d|\.\d)")
# flags without which the model does something else (no images, no draft, chat instead of
# embeddings): an engine lacking them cannot run the configuration; never dropped silently
ESSENTIAL = frozenset({"-mm", "-md", "--embedding", "--reranking", "--pooling"})


@dataclass
class Command:
    argv: list[str]
    dropped: list[str] = field(default_factory=list)  # flags the engine does not know, left out


def _cpu_moe_override(n: int | None) -> str:
    layers = r"\d+" if n is None else "|".join(str(i) for i in range(n))
    return rf"blk\.({layers})\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"


def _is_flag(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NUMBER.match(token)


def check_flags(engine: Engine, tokens: Sequence[str]) -> None:
    """Refuse a flag this engine's ``--help`` does not list (llama-server would exit at start with
    "unknown argument"), naming it and the closest flag the engine has. ``tokens``: flags the
    studio passes through untouched (those the estimator models are rewritten or left out by
    ``build_command`` instead)."""
    caps = set(engine.capabilities)
    previous = ""
    for token in tokens:
        flag = token.partition("=")[0] if token.startswith("--") else token
        if _is_flag(token) and flag not in caps:
            close = difflib.get_close_matches(flag, caps, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            if previous.startswith("--") and previous in caps:  # a value that looks like a flag
                hint += f" (if it is the value of {previous}, write {previous}={token})"
            raise InvalidInput(
                f"engine {engine.id} does not know the flag {flag} (not in its --help){hint}",
                flag=flag,
                engine=engine.id,
                suggestion=close[0] if close else None,
            )
        previous = flag if _is_flag(token) and "=" not in token else ""


def build_command(engine: Engine, model: str, flags: ServerFlags, host: str, port: int) -> Command:
    """The exact argv; a flag the engine lacks is rewritten with an equivalent it has, or left out
    (and reported) when nothing equivalent exists and it only tunes memory or speed."""
    caps = set(engine.capabilities)
    argv = [str(engine.server), "-m", model, "--host", host, "--port", str(port)]
    dropped: list[str] = []
    for flag, values in flags.with_(n_cpu_moe=0, cpu_moe=False).to_pairs():
        rendered = spell(flag, values, caps)  # the newest spelling it has, or an older form
        if rendered is not None:
            argv += rendered
        elif flag in ESSENTIAL:
            raise InvalidInput(
                f"engine {engine.id} has no {flag} (not in its --help): it cannot run this model "
                "as configured; choose a newer llama.cpp build",
                flag=flag,
                engine=engine.id,
            )
        else:
            dropped.append(" ".join([flag, *values]))
    check_flags(engine, flags.extra)
    argv += list(flags.extra)
    if flags.cpu_moe or flags.n_cpu_moe:
        n = None if flags.cpu_moe else flags.n_cpu_moe
        native = "--cpu-moe" if flags.cpu_moe else "--n-cpu-moe"
        if native in caps:
            argv += [native] if n is None else [native, str(n)]
        elif "-ot" in caps or "--override-tensor" in caps:
            argv += ["-ot", _cpu_moe_override(n)]  # the same placement, spelled for older builds
        else:
            raise InvalidInput(
                f"engine {engine.id} can neither keep experts on the CPU ({native}) nor override tensors"
            )
    if "--port" not in caps or "-m" not in caps:
        raise InvalidInput(f"engine {engine.id} does not look like llama-server (no --port/-m in its --help)")
    return Command(argv, dropped)
