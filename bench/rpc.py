"""The RPC path's overhead on loopback: the same tiny model (tests/test_rpc.py's ``wide``: llama,
8 layers, width 512, f16, ~121 MiB) run by the rig's llama-server on this host alone, and split
over two ``llamastudio worker`` processes (ggml-rpc-server, CPU backend) on 127.0.0.1 with
``--rpc`` and ``-ts 1,1``. Load time is spawn → ``/health`` 200; prompt and generation speed are
llama-server's own ``timings`` for one completion (median of ``--runs``).

    .venv/bin/python -m bench.rpc [--runs 3] [--tokens 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from tests.rig import binaries
from tests.rig.factory import Vocab, _dense
from tests.rig.server import wait_healthy

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port

PROMPT = "Once upon a time " * 16


def start_worker(tmp: Path, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port, sport = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "llamastudio",
        "--data-dir",
        str(binaries.build_dir().parents[1]),
        "worker",
        "--listen",
        f"127.0.0.1:{port}",
        "--status-port",
        str(sport),
        "--key",
        "bench",
        "-t",
        str(threads),
    ]
    log = tmp / f"worker-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    wait_healthy(proc, [f"http://127.0.0.1:{sport}/health"], 60, log.read_text, "worker")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until its rpc-server accepts connections
        st = httpx.get(f"http://127.0.0.1:{sport}/status", headers={"Authorization": "Bearer bench"}).json()
        if st["rpc"]["alive"]:
            break
        time.sleep(0.1)
    return proc, port


def run(model: Path, extra: list[str], tokens: int, threads: int, tmp: Path) -> dict[str, float]:
    port = free_port()
    argv = [
        str(binaries.binary("llama-server")),
        "-m",
        str(model),
        "--port",
        str(port),
        "-c",
        "512",
        "-np",
        "1",
        "-t",
        str(threads),
        "-fit",
        "off",
        "--no-webui",
        *extra,
    ]
    log = tmp / "server.log"
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, [f"http://127.0.0.1:{port}/health"], 120, log.read_text, "llama-server")
        load_s = time.perf_counter() - start
        body = {"prompt": PROMPT, "n_predict": tokens, "ignore_eos": True, "cache_prompt": False}
        t = httpx.post(f"http://127.0.0.1:{port}/completion", json=body, timeout=300).json()["timings"]
    finally:
        stop_process(proc, grace=10)
    return {"load_s": load_s, "prompt_tps": t["prompt_per_second"], "gen_tps": t["predicted_per_second"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = tmp / "wide.gguf"
        vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
        _dense("llama", 512, 8, 8, 2, 2048, qk_norm=False)(model, vocab)
        workers = [start_worker(tmp, args.threads) for _ in range(2)]
        try:
            rpc = ["--rpc", ",".join(f"127.0.0.1:{p}" for _, p in workers), "-ts", "1,1", "-ngl", "999"]
            rows = {"local (CPU)": [], "RPC x2 (loopback)": []}  # type: dict[str, list[dict[str, float]]]
            for _ in range(args.runs):
                rows["local (CPU)"].append(run(model, [], args.tokens, args.threads, tmp))
                rows["RPC x2 (loopback)"].append(run(model, rpc, args.tokens, args.threads, tmp))
        finally:
            for proc, _ in workers:
                stop_process(proc, grace=10)
    print(
        f"model: wide.gguf (llama 8x512, f16), {args.tokens} tokens, -t {args.threads}, median of {args.runs}"
    )
    print(f"{'path':<20} {'load s':>8} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:<20} {med['load_s']:>8.2f} {med['prompt_tps']:>13.1f} {med['gen_tps']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
