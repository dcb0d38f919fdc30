"""Gateway overhead: the same tiny model served by (1) llama-server directly, (2) the studio gateway
(``llamastudio serve``), (3) llama-server's own router mode (``--models-preset``), (4) LiteLLM's
proxy in front of (1), all up at once and measured in interleaved rounds (A B C D, D C B A, …):

- latency of a small non-streaming request (p50/p99, sequential), and what each proxy adds to
  direct's in the same round;
- generated tokens/s with 16 and 64 concurrent streams, and the ratio to direct's in the same
  round; streams that fail or end without ``[DONE]`` are counted as dropped;
- medians over the rounds with their [min–max] spread (single runs on shared cores swing ±15 %);
- cold load: request → first token for a stopped model, minus a bare llama-server's
  start → ready → first token.

``--pinned``: the studio with ``LLAMASTUDIO_PIN_THREADS`` (each compute thread pinned to a CPU, a
short OpenMP spin: ``engines/kinds/threads.py``) and every other llama-server started with the same
placement, so what a proxy adds is still the proxy alone.

    .venv/bin/python -m bench.gateway [--rounds 5] [--requests 200] [--tokens 128]
        [--streams 16,64] [--cold-runs 3] [--no-litellm] [--first-load] [--pinned]

Everything shares this machine's cores (client, proxy and llama-server): the worst case for a proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio

from bench.litellm import litellm_proxy
from llamastudio.engines.kinds.threads import SPIN, links_libgomp, one_per_core, placement, usable_cpus
from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port

FLAGS = ["-c", "16384", "-np", "64", "-t", "2", "--no-webui"]


def wait_ready(url: str, timeout: float = 120, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


@dataclass(frozen=True)
class Placement:
    """Thread placement flags and environment for a llama-server."""

    flags: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def environ(self) -> dict[str, str]:
        return {**os.environ, **dict(self.env)}


def studio_placement(server: Path) -> Placement:
    """What the studio adds to FLAGS' llama-server on this machine (engines/kinds/threads.py)."""
    if not links_libgomp(server):
        return Placement()
    cpus = usable_cpus()
    flags = placement(FLAGS, int(FLAGS[FLAGS.index("-t") + 1]), cpus, one_per_core(cpus))
    return Placement(tuple(flags), (("GOMP_SPINCOUNT", SPIN),) if flags else ())


def start_direct(
    server: Path, model: Path, log: Path, pin: Placement = Placement()
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *FLAGS, *pin.flags],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=pin.environ(),
        )
    return proc, f"http://127.0.0.1:{port}"


async def latency(url: str, model: str, n: int, warm: int = 10) -> tuple[list[float], int]:
    """Seconds per small non-streaming request, sequential; and how many failed."""
    body = {"model": model, "prompt": "x", "max_tokens": 1, "temperature": 0}
    out: list[float] = []
    failed = 0
    # idle connections dropped before llama-server's 5 s keep-alive timeout closes them under us
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=4)) as s:
        for i in range(n + warm):
            t0 = time.perf_counter()
            try:
                async with s.post(f"{url}/v1/completions", json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            if not ok:
                failed += 1
            elif i >= warm:
                out.append(time.perf_counter() - t0)
    return out, failed


async def throughput(url: str, model: str, streams: int, tokens: int) -> tuple[float, int]:
    """Generated tokens/s of ``streams`` concurrent streams of ``tokens`` tokens each; and how many
    streams were dropped (an error, or no ``[DONE]``)."""
    body = {"model": model, "prompt": "x", "max_tokens": tokens, "stream": True, "ignore_eos": True}
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:

        async def one() -> int:
            n = 0
            done = False
            try:
                async with s.post(f"{url}/v1/completions", json=body) as r:
                    if r.status != 200:
                        return -1
                    async for line in r.content:
                        if line.startswith(b"data: {"):
                            n += 1
                        elif line.startswith(b"data: [DONE]"):
                            done = True
            except aiohttp.ClientError:
                return -1
            return n if done else -1

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - t0
    return sum(c for c in counts if c > 0) / elapsed, sum(1 for c in counts if c < 0)


def first_token(url: str, model: str) -> float:
    """Seconds from sending a streaming request to its first token."""
    t0 = time.perf_counter()
    body = {"model": model, "prompt": "x", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - t0
    raise RuntimeError(f"no token from {url}")


def serve_measured(studio: Studio, model: Path, measured: bool = True) -> None:
    """The studio serving ``model`` as ``tiny``, as it does from a configuration's second load on
    (``measured``): the first load of a configuration runs llama-server at ``-lv 4`` to measure its
    buffers (``runtime/measured.py``), which at ``-np 64`` logs ~150 lines a request where the
    default verbosity logs 9; once measured, its loads run at the default verbosity, as every other
    target's llama-server does. ``measured=False``: left in that first load."""
    studio.configure("tiny", model=str(model), args=[a for a in FLAGS if a != "--no-webui"])
    if not measured:
        return
    first_token(studio.gateway_url, "tiny")
    deadline = time.monotonic() + 60
    with studio.api() as c:
        while c.get("/api/models/tiny/config").json()["prepared"]["memory"]["source"] != "measured":
            if time.monotonic() > deadline:
                raise RuntimeError("the studio did not record the first load's measurement")
            time.sleep(0.1)
        c.post("/api/models/tiny/stop").raise_for_status()


def tiny_model(tmp: Path, pin: Placement = Placement()) -> tuple[Path, Path]:
    """The tiny llama GGUF every target serves, and the router's preset naming it as ``tiny``
    (with ``pin``'s flags: ``-C`` as ``cpu-mask``)."""
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    model = tmp / "llama.gguf"
    BUILDERS["llama"](model, vocab)
    preset = tmp / "models.ini"
    own = "".join(
        f"{'cpu-mask' if k == '-C' else k.lstrip('-')} = {v}\n"
        for k, v in zip(pin.flags[::2], pin.flags[1::2], strict=True)
    )
    preset.write_text(f"version = 1\n\n[tiny]\nmodel = {model}\nc = 16384\nnp = 64\nt = 2\n{own}")
    return model, preset


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class Target:
    name: str
    url: str
    rounds: list[dict[str, float]] = field(default_factory=list)
    dropped: int = 0


def measure(t: Target, args: argparse.Namespace) -> dict[str, float]:
    """One round for one target: latency, then tokens/s at each stream count."""
    lat, failed = asyncio.run(latency(t.url, "tiny", args.requests))
    t.dropped += failed
    out = {"p50": statistics.median(lat) * 1000, "p99": pct(lat, 0.99) * 1000}
    for n in args.streams:
        tps, dropped = asyncio.run(throughput(t.url, "tiny", n, args.tokens))
        out[f"tps{n}"] = tps
        t.dropped += dropped
    return out


def interleaved(targets: list[Target], args: argparse.Namespace) -> None:
    """``args.rounds`` rounds, the order reversed every other round (A B C, C B A, …), so a slow
    spell of the machine falls on every target alike."""
    for t in targets:  # warm-up: connections, the engines' first batches
        asyncio.run(throughput(t.url, "tiny", max(args.streams), 16))
    for r in range(args.rounds):
        order = targets if r % 2 == 0 else targets[::-1]
        for t in order:
            t.rounds.append(measure(t, args))
        line = "  ".join(f"{t.name}: {t.rounds[-1][f'tps{max(args.streams)}']:,.0f}" for t in targets)
        print(f"round {r + 1}/{args.rounds} tok/s at {max(args.streams)} streams: {line}", file=sys.stderr)


def spread(values: list[float], fmt: str) -> str:
    """``median [min–max]``."""
    med = statistics.median(values)
    return f"{med:{fmt}} [{min(values):{fmt}}–{max(values):{fmt}}]"


def report(targets: list[Target], args: argparse.Namespace) -> None:
    """Per target: medians over the rounds with [min–max]; the added latency and the tokens/s
    ratio are taken against direct *within each round*, then their median and range."""
    direct = targets[0]
    n = max(args.streams)
    print(
        f"tiny llama model, llama-server {' '.join(FLAGS)}; {os.cpu_count()} cores shared by client, "
        f"proxy, server; {args.rounds} interleaved rounds; per round {args.requests} sequential "
        f"/v1/completions (max_tokens=1), then {'/'.join(map(str, args.streams))} concurrent streams "
        f"of {args.tokens} tokens; median [min–max] over the rounds; the studio's model "
        + (
            "in its first, measuring load (llama-server at -lv 4)\n"
            if args.first_load
            else "measured, so loaded at llama-server's default verbosity as the others are"
        )
        + (
            "; every llama-server pinned as the studio's with LLAMASTUDIO_PIN_THREADS ("
            + (" ".join(args.pin.flags) or "none")
            + "".join(f", {k}={v}" for k, v in args.pin.env)
            + ")\n"
            if args.pinned
            else "\n"
        )
    )
    cols = " | ".join(f"tok/s {s} streams" for s in args.streams)
    print(
        f"| server | p50 ms | p99 ms | p50 added ms | p99 added ms | {cols} "
        f"| {n} streams vs direct | dropped |"
    )
    print("|---|---|---|---|---|" + "---|" * len(args.streams) + "---|---|")
    for t in targets:
        rs = t.rounds
        added50 = [r["p50"] - d["p50"] for r, d in zip(rs, direct.rounds, strict=True)]
        added99 = [r["p99"] - d["p99"] for r, d in zip(rs, direct.rounds, strict=True)]
        ratio = [r[f"tps{n}"] / d[f"tps{n}"] * 100 for r, d in zip(rs, direct.rounds, strict=True)]
        tps = " | ".join(spread([r[f"tps{s}"] for r in rs], ",.0f") for s in args.streams)
        print(
            f"| {t.name} | {spread([r['p50'] for r in rs], '.2f')} "
            f"| {spread([r['p99'] for r in rs], '.2f')} | "
            f"{spread(added50, '+.2f')} | {spread(added99, '+.2f')} | {tps} | {spread(ratio, '.0f')} % | "
            f"{t.dropped} |"
        )
    sys.stdout.flush()


def cold_load(
    server: Path, model: Path, preset: Path, tmp: Path, runs: int, pin: Placement, env: dict[str, str] | None
) -> None:
    """Request → first token of a stopped model, vs a bare llama-server's start → ready → token."""
    cold: dict[str, list[float]] = {"direct": [], "studio": [], "router": []}
    for _ in range(runs):
        t0 = time.perf_counter()
        proc, url = start_direct(server, model, tmp / "direct-cold.log", pin)
        try:
            wait_ready(url)
            cold["direct"].append(time.perf_counter() - t0 + first_token(url, "tiny"))
        finally:
            stop_process(proc)
    with Studio(tmp / "studio-cold", server, env=env) as studio:
        studio.configure("tiny", model=str(model), args=[a for a in FLAGS if a != "--no-webui"])
        for _ in range(runs):
            studio.api().post("/api/models/tiny/stop")
            cold["studio"].append(first_token(studio.gateway_url, "tiny"))
    with start_router(server, preset, tmp / "router-cold.log", pin) as url:
        for _ in range(runs):
            httpx.post(f"{url}/models/unload", json={"model": "tiny"}, timeout=60)
            time.sleep(0.5)
            cold["router"].append(first_token(url, "tiny"))
    base = statistics.median(cold["direct"])
    print(f"\ncold load, median of {runs}: request → first token of a stopped model")
    print("| server | median s | overhead vs bare start → ready → first token |")
    print("|---|---|---|")
    print(f"| llama-server direct (start → ready → first token) | {base:.3f} | — |")
    for name, key in (("studio gateway", "studio"), ("llama-server router", "router")):
        med = statistics.median(cold[key])
        print(f"| {name} | {med:.3f} | {(med - base) * 1000:+.0f} ms |")


@contextmanager
def start_router(server: Path, preset: Path, log: Path, pin: Placement = Placement()) -> Iterator[str]:
    """llama-server's router mode over ``preset`` (``pin``'s environment reaches its children)."""
    port = free_port()
    with open(log, "ab") as out:
        router = subprocess.Popen(
            [str(server), "--models-preset", str(preset), "--port", str(port), "--no-webui"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=pin.environ(),
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        yield url
    finally:
        stop_process(router)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200, help="sequential requests per latency round")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per stream")
    ap.add_argument("--streams", type=lambda v: [int(x) for x in v.split(",")], default=[16, 64])
    ap.add_argument("--cold-runs", type=int, default=3, help="0: skip the cold-load table")
    ap.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's proxy out")
    ap.add_argument(
        "--pinned",
        action="store_true",
        help="the studio with LLAMASTUDIO_PIN_THREADS, every other llama-server placed alike",
    )
    ap.add_argument(
        "--first-load",
        action="store_true",
        help="serve the studio's model in its first, measuring load (llama-server at -lv 4)",
    )
    args = ap.parse_args()
    server = binaries.binary("llama-server")
    args.pin = pin = studio_placement(server) if args.pinned else Placement()
    studio_env = {"LLAMASTUDIO_PIN_THREADS": "true"} if args.pinned else None
    with tempfile.TemporaryDirectory() as tmp_s, ExitStack() as stack:
        tmp = Path(tmp_s)
        model, preset = tiny_model(tmp, pin)
        # every target up at once, each with its own llama-server (LiteLLM in front of direct's)
        proc, direct_url = start_direct(server, model, tmp / "direct.log", pin)
        stack.callback(stop_process, proc)
        wait_ready(direct_url)
        studio = stack.enter_context(Studio(tmp / "studio", server, env=studio_env))
        serve_measured(studio, model, measured=not args.first_load)
        targets = [
            Target("llama-server direct", direct_url),
            Target("studio gateway", studio.gateway_url),
            Target(
                "llama-server router",
                stack.enter_context(start_router(server, preset, tmp / "router.log", pin)),
            ),
        ]
        if not args.no_litellm:
            url = stack.enter_context(litellm_proxy(direct_url, "tiny", tmp))
            wait_ready(url, path="/health/liveliness")
            targets.append(Target("LiteLLM proxy", url))
        for t in targets[1:]:
            first_token(t.url, "tiny")  # loaded (the studio and the router start it on demand)
        interleaved(targets, args)
        report(targets, args)
        stack.close()
        if args.cold_runs:
            cold_load(server, model, preset, tmp, args.cold_runs, pin, studio_env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
