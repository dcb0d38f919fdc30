"""llama-server argv for one model on one engine, using only flags that engine's ``--help`` lists."""

from __future__ import annotations

from dataclasses import dataclass, field

from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.fit.flags import ServerFlags


@dataclass
class Command:
    argv: list[str]
    dropped: list[str] = field(default_factory=list)  # flags the engine does not know, left out


def _cpu_moe_override(n: int | None) -> str:
    layers = r"\d+" if n is None else "|".join(str(i) for i in range(n))
    return rf"blk\.({layers})\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"


def build_command(engine: Engine, model: str, flags: ServerFlags, host: str, port: int) -> Command:
    """The exact argv; a flag the engine lacks is rewritten with an equivalent it has, or left out
    (and reported) when nothing equivalent exists and it only tunes memory or speed."""
    caps = set(engine.capabilities)
    argv = [str(engine.server), "-m", model, "--host", host, "--port", str(port)]
    dropped: list[str] = []
    for flag, values in flags.with_(n_cpu_moe=0, cpu_moe=False).to_pairs():
        if flag in caps:
            argv += [flag, *values]
        else:
            dropped.append(" ".join([flag, *values]))
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
