"""The relay's own CPU per streamed token: the studio gateway's process vs llama-server's router
process (its model child not counted), each in front of its own llama-server with the same tiny
model, 64 concurrent streams, interleaved rounds.

CPU seconds (user + system, from /proc) spent by the proxy process divided by the tokens it
relayed: unlike tokens/s, this barely moves when the machine is busy, so it shows what the relay
itself costs. The engine's log lines (llama-server prints a few per request) are read by both.

    .venv/bin/python -m bench.relay_cpu [--rounds 5] [--streams 64] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from tests.rig import binaries
from tests.rig.studio import Studio

from bench.gateway import FLAGS, first_token, serve_measured, spread, start_router, throughput, tiny_model


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def router_pid(port: int) -> int:
    """The router's own process (the one listening on ``port``), not its model child."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "--models-preset" in cmd and str(port) in cmd:
            return proc.pid
    raise RuntimeError(f"no router process on port {port}")


def one_round(url: str, pid: int, streams: int, tokens: int) -> tuple[float, float]:
    """(µs of proxy CPU per relayed token, tokens/s) for one batch of streams."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    tps, dropped = asyncio.run(throughput(url, "tiny", streams, tokens))
    elapsed = time.perf_counter() - t0
    if dropped:
        print(f"warning: {dropped} streams dropped", file=sys.stderr)
    return (cpu_seconds(pid) - c0) / (tps * elapsed) * 1e6, tps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=128)
    args = ap.parse_args()
    server = binaries.binary("llama-server")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model, preset = tiny_model(tmp)
        results: dict[str, list[tuple[float, float]]] = {"studio gateway": [], "llama-server router": []}
        with Studio(tmp / "studio", server) as studio, start_router(server, preset, tmp / "r.log") as router:
            serve_measured(studio, model)
            assert studio.proc is not None
            targets = {
                "studio gateway": (studio.gateway_url, studio.proc.pid),
                "llama-server router": (router, router_pid(int(router.rsplit(":", 1)[1]))),
            }
            for url, _ in targets.values():
                first_token(url, "tiny")
                asyncio.run(throughput(url, "tiny", args.streams, 16))  # warm-up
            names = list(targets)
            for r in range(args.rounds):
                for name in names if r % 2 == 0 else names[::-1]:
                    results[name].append(one_round(*targets[name], args.streams, args.tokens))
    print(
        f"relay CPU per streamed token: {args.streams} streams × {args.tokens} tokens, tiny llama model "
        f"(llama-server {' '.join(FLAGS)}), {args.rounds} interleaved rounds, {os.cpu_count()} cores; "
        "median [min–max]\n"
    )
    print("| proxy | µs CPU per token | tok/s | vs router |")
    print("|---|---|---|---|")
    base = statistics.median(us for us, _ in results["llama-server router"])
    for name, rows in results.items():
        us = [u for u, _ in rows]
        print(
            f"| {name} | {spread(us, '.1f')} | {spread([t for _, t in rows], ',.0f')} | "
            f"{statistics.median(us) / base:.2f}× |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
