"""How many CPU threads a model computes with: the scheduler serializes CPU work by it (two
models spinning on all cores each ran at a fraction of one's speed, issue 18 #8)."""

from __future__ import annotations

import contextlib

from llamastudio.engines.kinds.base import flag_value
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.usage import Estimate


def _flag_int(argv: list[str], names: tuple[str, ...]) -> int | None:
    raw = flag_value(argv, names)
    with contextlib.suppress(ValueError, TypeError):
        return int(raw)  # type: ignore[arg-type]
    return None


def cpu_threads(argv: list[str], flags: ServerFlags, est: Estimate, cores: int) -> int:
    """Threads the model computes with on the CPU: 0 when all of it runs on GPUs; else ``-t``
    (or ``-tb`` when larger), llama.cpp's default being the physical cores."""
    on_cpu = bool(est.host.layers) or flags.cpu_moe or flags.n_cpu_moe > 0 or flags.no_kv_offload
    if not on_cpu:
        return 0
    threads = _flag_int(argv, ("-t", "--threads"))
    batch = _flag_int(argv, ("-tb", "--threads-batch"))
    threads = threads if threads is not None and threads > 0 else max(1, cores)
    batch = batch if batch is not None and batch > 0 else threads
    return max(threads, batch)
