"""How many CPU threads a model computes with: the scheduler serializes CPU work by it (two
models spinning on all cores each ran at a fraction of one's speed, issue 18 #8); and the CPUs
they are pinned to (``placement``)."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

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


# llama-server's own thread placement: a configuration that names any of these keeps its own
_PLACEMENT = {"-C", "--cpu-mask", "-Cr", "--cpu-range", "--cpu-strict", "-tb", "--threads-batch"}
_PLACEMENT |= {"-Cb", "--cpu-mask-batch", "-Crb", "--cpu-range-batch", "--cpu-strict-batch"}
_TOPOLOGY = Path("/sys/devices/system/cpu")


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity: a container's cpuset, ``taskset``)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def one_per_core(cpus: list[int], topology: Path = _TOPOLOGY) -> list[int]:
    """The first logical CPU of each physical core among ``cpus`` (SMT siblings left out)."""
    seen: dict[tuple[str, str], int] = {}
    for cpu in cpus:
        try:
            top = topology / f"cpu{cpu}" / "topology"
            key = ((top / "physical_package_id").read_text().strip(), (top / "core_id").read_text().strip())
        except OSError:  # no topology: each CPU its own core
            key = ("", str(cpu))
        seen.setdefault(key, cpu)
    return sorted(seen.values())


def links_libgomp(server: Path) -> bool:
    """Whether this llama-server computes with GNU OpenMP: its binary or the ggml CPU backend
    beside it (``lib/`` of a shared build) names ``libgomp.so`` among the libraries it needs."""
    cpu = [
        *sorted(server.parent.glob("libggml-cpu*.so*")),
        *sorted(server.parent.parent.glob("lib/libggml-cpu*.so*")),
    ]
    return any(_names_libgomp(str(f), *_stamp(f)) for f in [server, *cpu])


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _names_libgomp(path: str, mtime_ns: int, size: int) -> bool:  # the stamp keys the cache
    """In the first 16 MiB, where an ELF file's dynamic string table is (a CUDA build's libraries
    run to hundreds of MiB)."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        tail = b""
        for _ in range(16):
            chunk = f.read(1 << 20)
            if not chunk:
                break
            if b"libgomp.so" in tail + chunk:
                return True
            tail = chunk[-16:]
    return False


# Rounds a GNU OpenMP thread spins before it sleeps, waiting at a barrier or for the next graph:
# its default, 300,000, is ~5 ms on the CPU that measured this; 50,000 (~0.8 ms) keeps a pinned
# thread's idle spin from holding its CPU against a proxy or client woken there (small requests'
# p99 through the gateway 4.9 → 2.3 ms), and still covers a barrier's wait while the gateway's
# relay briefly takes that CPU (10,000 did not: 64 streams through the gateway fell to 92 %).
SPIN = "50000"


def placement(argv: list[str], threads: int, cpus: list[int], per_core: list[int]) -> list[str]:
    """llama-server flags pinning each of a model's compute threads to a CPU of its own, for a
    model whose ``threads`` are one per core (``per_core``: one CPU of each) or one per CPU.

    llama.cpp's CPU backend computes a graph in ``threads`` OpenMP threads that spin at each
    barrier. Unpinned, the kernel's balancer lets two of them share a core while another core
    idles (it won't move a thread that ran within the last 0.5 ms, and these always have), and
    every barrier then waits for a scheduler tick, 4 ms. With a third process awake beside them (a
    proxy, a client) that happened to one small request in 50–100 on 2 cores: p99 5.3 ms and
    outliers of 40 ms behind the gateway (``bench/gateway``).

    ``--cpu-strict 1`` pins thread i to the i-th CPU of ``-C``'s mask (the server's own threads
    stay free). Pinned, a thread's spin after each graph (GNU OpenMP's, ~5 ms) holds its CPU
    against anything woken there, so a shorter spin (``SPIN``, ``GOMP_SPINCOUNT``) goes with it.
    Nothing is pinned when the model leaves CPUs to others, as a second model's threads would be
    pinned to the same ones; nor over a configuration's own placement flags.
    """
    if threads <= 0 or any(a.split("=", 1)[0] in _PLACEMENT for a in argv):
        return []
    if threads == len(cpus):
        chosen = cpus
    elif threads == len(per_core):
        chosen = per_core
    else:  # fewer: CPUs left to others; more: two per CPU whatever is pinned
        return []
    return ["-C", f"0x{sum(1 << c for c in chosen):x}", "--cpu-strict", "1"]
