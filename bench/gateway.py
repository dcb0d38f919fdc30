"""Gateway overhead: the same tiny model served by (1) llama-server directly, (2) the studio gateway
(``llamastudio serve``), (3) llama-server's own router mode (``--models-preset``), in one run:

- latency of a small non-streaming request (p50/p99, sequential);
- generated tokens/s with 1, 16 and 64 concurrent streams;
- cold load: request → first token for a stopped model, minus a bare llama-server's
  start → ready → first token.

    .venv/bin/python -m bench.gateway [--requests 300] [--tokens 64] [--cold-runs 3]

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
from pathlib import Path

import aiohttp
import httpx
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port

FLAGS = ["-c", "16384", "-np", "64", "-t", "2", "--no-webui"]


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise TimeoutError(url)


def start_direct(server: Path, model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), *FLAGS],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}"


async def latency(url: str, model: str, n: int) -> list[float]:
    body = {"model": model, "prompt": "x", "max_tokens": 1, "temperature": 0}
    out = []
    # idle connections dropped before llama-server's 5 s keep-alive timeout closes them under us
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=4)) as s:
        for i in range(n + 10):
            t0 = time.perf_counter()
            async with s.post(f"{url}/v1/completions", json=body) as r:
                await r.read()
                assert r.status == 200, await r.text()
            if i >= 10:  # warm-up
                out.append(time.perf_counter() - t0)
    return out


async def throughput(url: str, model: str, streams: int, tokens: int, rounds: int = 3) -> float:
    body = {"model": model, "prompt": "x", "max_tokens": tokens, "stream": True, "ignore_eos": True}
    conn = aiohttp.TCPConnector(limit=0, keepalive_timeout=4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:

        async def one() -> int:
            n = 0
            async with s.post(f"{url}/v1/completions", json=body) as r:
                assert r.status == 200, await r.text()
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        n += 1
            return n

        await asyncio.gather(*(one() for _ in range(streams)))  # warm-up
        t0 = time.perf_counter()
        counts = []
        for _ in range(rounds):
            counts += await asyncio.gather(*(one() for _ in range(streams)))
        return sum(counts) / (time.perf_counter() - t0)


def first_token(url: str, model: str) -> float:
    """Seconds from sending a streaming request to its first token."""
    t0 = time.perf_counter()
    body = {"model": model, "prompt": "x", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                return time.perf_counter() - t0
    raise RuntimeError(f"no token from {url}")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--cold-runs", type=int, default=5)
    args = ap.parse_args()
    server = binaries.binary("llama-server")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
        model = tmp / "llama.gguf"
        BUILDERS["llama"](model, vocab)
        preset = tmp / "models.ini"
        preset.write_text(f"version = 1\n\n[tiny]\nmodel = {model}\nc = 16384\nnp = 64\nt = 2\n")
        results: dict[str, dict[str, float]] = {}
        cold: dict[str, list[float]] = {"direct": [], "studio": [], "router": []}

        # (1) direct
        proc, url = start_direct(server, model, tmp / "direct.log")
        try:
            wait_ready(url)
            results["llama-server direct"] = run_suite(url, "tiny", args)
        finally:
            stop_process(proc)
        for _ in range(args.cold_runs):
            t0 = time.perf_counter()
            proc, url = start_direct(server, model, tmp / "direct.log")
            try:
                wait_ready(url)
                cold["direct"].append(time.perf_counter() - t0 + first_token(url, "tiny"))
            finally:
                stop_process(proc)

        # (2) the studio gateway
        with Studio(tmp / "studio", server) as studio:
            studio.configure("tiny", model=str(model), args=[a for a in FLAGS if a != "--no-webui"])
            for _ in range(args.cold_runs):
                studio.api().post("/api/models/tiny/stop")
                cold["studio"].append(first_token(studio.gateway_url, "tiny"))
            results["studio gateway"] = run_suite(studio.gateway_url, "tiny", args)

        # (3) llama-server router mode
        port = free_port()
        with open(tmp / "router.log", "ab") as out:
            router = subprocess.Popen(
                [str(server), "--models-preset", str(preset), "--port", str(port), "--no-webui"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            for _ in range(args.cold_runs):
                httpx.post(f"{url}/models/unload", json={"model": "tiny"}, timeout=60)
                time.sleep(0.5)
                cold["router"].append(first_token(url, "tiny"))
            results["llama-server router"] = run_suite(url, "tiny", args)
        finally:
            stop_process(router)

    report(results, cold, args)
    return 0


def run_suite(url: str, model: str, args: argparse.Namespace) -> dict[str, float]:
    lat = asyncio.run(latency(url, model, args.requests))
    out = {"p50": statistics.median(lat) * 1000, "p99": pct(lat, 0.99) * 1000}
    for n in (1, 16, 64):
        out[f"tps{n}"] = asyncio.run(throughput(url, model, n, args.tokens))
    return out


def report(
    results: dict[str, dict[str, float]], cold: dict[str, list[float]], args: argparse.Namespace
) -> None:
    direct = results["llama-server direct"]
    print(
        f"tiny llama model, llama-server {' '.join(FLAGS)}; "
        f"{os.cpu_count()} cores shared by client, proxy, server"
    )
    print(
        f"latency: {args.requests} sequential /v1/completions (max_tokens=1); "
        f"streams: {args.tokens} tokens each\n"
    )
    print(
        "| server | p50 ms | p99 ms | p50 added | tok/s 1 stream | 16 streams | 64 streams | 64 vs direct |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p50'] - direct['p50']:+.2f} ms | "
            f"{r['tps1']:,.0f} | {r['tps16']:,.0f} | {r['tps64']:,.0f} | {r['tps64'] / direct['tps64']:.0%} |"
        )
    base = statistics.median(cold["direct"])
    print(f"\ncold load, median of {args.cold_runs}: request → first token of a stopped model")
    print("| server | median s | overhead vs bare start → ready → first token |")
    print("|---|---|---|")
    print(f"| llama-server direct (start → ready → first token) | {base:.3f} | — |")
    for name, key in (("studio gateway", "studio"), ("llama-server router", "router")):
        med = statistics.median(cold[key])
        print(f"| {name} | {med:.3f} | {(med - base) * 1000:+.0f} ms |")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
