"""Load and fault scenarios against the real ``llamastudio serve`` and the rig's llama-server.

Every scenario talks to loopback only, is bounded in requests and seconds, and stops by itself:

- ``load``: N concurrent streaming completions to one model (all must finish);
- ``starvation``: room for one model; clients keep model A busy without pause while one request
  for model B arrives: B must be served within the scheduler's fairness bound;
- ``kill9``: ``kill -9`` of an engine mid-stream: the client gets a clean error (no hang), the next
  request restarts the model, a bystander model keeps its process;
- ``slow-stop``: an engine that ignores SIGTERM is stopped while a neighbour serves requests: the
  neighbour's latency must not grow by the stop's grace period.

    .venv/bin/python -m bench.faults [--streams 128] [--only load,starvation,kill9,slow-stop]

Prints one table (held / failed, latencies); the README keeps the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.studio import Studio

from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model

SMALL = ["-c", "512", "-np", "2", "-t", "1"]
WIDE = ["-c", "16384", "-np", "64", "-t", "2"]
LONG = ["-c", "8192", "-np", "1", "-t", "1"]
# A wrapper that ignores SIGTERM (SIG_IGN) and runs llama-server as its child: the studio's SIGTERM
# to the group ends the child, the wrapper lives on until the SIGKILL after the grace period.
IGNORE_TERM = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "child.wait()\n"
    "time.sleep(3600)  # the engine is gone; the wrapper lingers until SIGKILL\n"
)


@dataclass
class Row:
    scenario: str
    held: int
    failed: int
    p50_ms: float
    worst_ms: float
    note: str


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def complete(gw: httpx.Client, model: str, tokens: int = 4) -> float:
    t0 = time.perf_counter()
    r = gw.post("/v1/completions", json={"model": model, "prompt": "x", "max_tokens": tokens})
    r.raise_for_status()
    return time.perf_counter() - t0


def stream(gw: httpx.Client, model: str, tokens: int) -> tuple[float, int]:
    """One streamed completion: seconds, and the tokens it generated (from the final event's
    usage; events are not tokens: llama-server holds a token that ends inside a UTF-8 sequence
    and sends it with the next), 0 unless the stream ended with ``[DONE]``."""
    body = {"model": model, "prompt": "x", "max_tokens": tokens, "stream": True, "ignore_eos": True}
    t0 = time.perf_counter()
    generated, done = 0, False
    with gw.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {") and '"usage"' in line:
                generated = int(json.loads(line[6:])["usage"]["completion_tokens"])
    return time.perf_counter() - t0, generated if done else 0


def scenario_load(studio: Studio, models: dict[str, Path], streams: int) -> Row:
    studio.configure("load", model=str(models["llama"]), args=WIDE)
    gw = studio.gateway()
    complete(gw, "load")
    gw = httpx.Client(
        base_url=studio.gateway_url, timeout=300, limits=httpx.Limits(max_connections=streams + 8)
    )
    times: list[float] = []
    failed = 0
    why: dict[str, int] = {}

    def one(_: int) -> None:
        nonlocal failed
        try:
            took, generated = stream(gw, "load", 32)
            if generated == 32:
                times.append(took)
            else:
                failed += 1
                why[f"{generated} tokens"] = why.get(f"{generated} tokens", 0) + 1
        except httpx.HTTPError as exc:
            failed += 1
            reason = f"{type(exc).__name__}: {str(exc)[:80]}"
            why[reason] = why.get(reason, 0) + 1

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(one, range(streams)))
    return Row(
        f"load: {streams} streams × 32 tokens",
        len(times),
        failed,
        pct(times, 0.5),
        pct(times, 0.99),
        "; ".join(f"{n}× {w}" for w, n in why.items()),
    )


def scenario_starvation(root: Path, server: Path, models: dict[str, Path], seconds: float) -> Row:
    streams = ["-c", "1024", "-np", "2", "-t", "2"]  # room for two 200-token requests
    needs = [
        next(d.total for d in estimate(load_model(str(models[m])), parse_server_args(streams)).devices)
        for m in ("llama", "qwen3")
    ]
    profile = root / "one-model.json"  # room for either model alone, one byte short of both
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + sum(needs) - 1}))
    with Studio(root / "starve", server, hardware=str(profile)) as studio:
        studio.configure("busy", model=str(models["llama"]), args=streams)
        studio.configure("waiting", model=str(models["qwen3"]), args=streams)
        gw = studio.gateway()
        complete(gw, "busy")
        stop = threading.Event()
        busy_ok = busy_failed = 0

        def hammer() -> None:  # 4 clients on 2 slots: "busy" is never idle
            nonlocal busy_ok, busy_failed
            c = studio.gateway()
            deadline = time.monotonic() + seconds + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    complete(c, "busy", 200)
                    busy_ok += 1
                except httpx.HTTPError:
                    busy_failed += 1

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(2.0)
        t0 = time.perf_counter()
        served = 0
        try:
            r = httpx.post(
                f"{studio.gateway_url}/v1/completions",
                json={"model": "waiting", "prompt": "x", "max_tokens": 4},
                timeout=seconds,
            )
            served = int(r.status_code == 200)
        except httpx.HTTPError:
            pass
        waited = time.perf_counter() - t0
        time.sleep(3.0)  # "busy" gets its turn back
        stop.set()
        for w in workers:
            w.join()
    note = f"B waited {waited:.1f}s (bound: 5 s + in flight + swap); A: {busy_ok} ok, {busy_failed} failed"
    return Row(
        "starvation: A hammered (4 clients, 2 slots), one request for B",
        served,
        1 - served + busy_failed,
        waited * 1000,
        waited * 1000,
        note,
    )


def scenario_kill9(studio: Studio, models: dict[str, Path]) -> Row:
    studio.configure("victim", model=str(models["llama"]), args=LONG)
    studio.configure("bystander", model=str(models["qwen3"]), args=SMALL)
    gw = studio.gateway()
    complete(gw, "victim")
    complete(gw, "bystander")
    bystander_pid = studio.status("bystander")["pid"]
    pid = studio.status("victim")["pid"]
    body = {"model": "victim", "prompt": "x", "max_tokens": 6000, "stream": True, "ignore_eos": True}
    clean_error = False
    t0 = time.perf_counter()
    try:
        with gw.stream("POST", "/v1/completions", json=body) as r:
            for n, line in enumerate(r.iter_lines()):
                if n == 3:
                    os.kill(pid, signal.SIGKILL)
                if line.startswith("data: ") and '"error"' in line:
                    clean_error = True
    except httpx.HTTPError:
        clean_error = True  # the connection ended: also a clean end for an SSE client
    ended = time.perf_counter() - t0
    t1 = time.perf_counter()
    recovered = 0
    try:
        complete(gw, "victim")
        recovered = 1
    except httpx.HTTPError:
        pass
    recovery = time.perf_counter() - t1
    same = studio.status("bystander")["pid"] == bystander_pid
    note = (
        f"stream ended {'with an error event' if clean_error else 'silently'} after {ended:.2f}s; "
        f"restart + reply {recovery:.2f}s; bystander pid {'kept' if same else 'CHANGED'}"
    )
    held = int(clean_error) + recovered + int(same)
    return Row("kill -9 of an engine mid-stream", held, 3 - held, recovery * 1000, recovery * 1000, note)


def scenario_slow_stop(root: Path, server: Path, models: dict[str, Path]) -> Row:
    env = {"LLAMASTUDIO_ALLOW_COMMANDS": "1"}
    with Studio(root / "slow", server, env=env) as studio:
        command = [sys.executable, "-c", IGNORE_TERM, str(server), "-m", str(models["gemma3"])]
        command += ["--host", "127.0.0.1", "--port", "${PORT}", *SMALL]
        studio.configure("stubborn", command=command, reserve={"CPU": 64 << 20})
        studio.configure("neighbour", model=str(models["qwen3"]), args=SMALL)
        gw = studio.gateway()
        complete(gw, "stubborn")
        complete(gw, "neighbour")
        base = [complete(gw, "neighbour") for _ in range(10)]
        stopper = threading.Thread(
            target=lambda: studio.api().post(
                "/api/models/stubborn/stop", headers={"X-Studio-Client": "bench"}
            )
        )
        t0 = time.perf_counter()
        stopper.start()
        during: list[float] = []
        while stopper.is_alive() and time.perf_counter() - t0 < 30:
            during.append(complete(gw, "neighbour"))
        stopper.join(30)
        stop_took = time.perf_counter() - t0
    added = (max(during) - statistics.median(base)) * 1000 if during else float("nan")
    median = statistics.median(base) * 1000
    note = f"stop took {stop_took:.1f}s; neighbour worst +{added:.0f} ms over its median {median:.0f} ms"
    return Row("slow stop (SIGTERM ignored)", len(during), 0, pct(during, 0.5), pct(during, 1.0), note)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=128)
    ap.add_argument("--starvation-window", type=float, default=60.0, help="seconds B may wait at most")
    ap.add_argument("--only", default="load,starvation,kill9,slow-stop")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    server = binaries.binary("llama-server")
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        models = {}
        for arch in ("llama", "qwen3", "gemma3"):
            models[arch] = root / f"{arch}.gguf"
            BUILDERS[arch](models[arch], vocab)
        runs: list[tuple[str, Callable[[], Row]]] = []
        with Studio(root / "main", server) as studio:
            if "load" in only:
                runs.append(("load", lambda: scenario_load(studio, models, args.streams)))
            if "kill9" in only:
                runs.append(("kill9", lambda: scenario_kill9(studio, models)))
            for _, run in runs:
                rows.append(run())
        if "starvation" in only:
            rows.append(scenario_starvation(root, server, models, args.starvation_window))
        if "slow-stop" in only:
            rows.append(scenario_slow_stop(root, server, models))
    print("| scenario | held | failed | p50 ms | worst ms | note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.scenario} | {r.held} | {r.failed} | {r.p50_ms:.0f} | {r.worst_ms:.0f} | {r.note} |")
    return 0 if all(r.failed == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
