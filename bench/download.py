"""Download throughput: the studio's resumable downloader vs plain ``hf_hub_download``, against
the same local Hub-compatible server and the same file (loopback: this measures client overhead,
including the sha256 check the studio does and huggingface_hub does not).

    .venv/bin/python -m bench.download [--size-mib 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from huggingface_hub import constants, hf_hub_download
from tests.rig.hub import Repo, hub_server

from llamastudio.hub.client import HubClient
from llamastudio.hub.download import download_file
from llamastudio.hub.quants import RepoFile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big-Q8_0.gguf"
        block = os.urandom(1 << 20)
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        with hub_server() as srv:
            repo = srv.add_repo(Repo("bench/big-GGUF", {"big-Q8_0.gguf": src}))
            rf = RepoFile("big-Q8_0.gguf", src.stat().st_size, repo.digests["big-Q8_0.gguf"])
            results: dict[str, list[float]] = {"hf_hub_download": [], "studio download_file": []}
            for i in range(args.runs):
                for name in results:
                    cache = Path(tmp) / f"cache-{name.split()[0]}-{i}"
                    constants.HF_HUB_CACHE = str(cache)
                    t0 = time.perf_counter()
                    if name == "hf_hub_download":
                        hf_hub_download(repo.id, rf.path, endpoint=srv.url, cache_dir=cache, token=False)
                    else:
                        download_file(HubClient(endpoint=srv.url, token=""), repo.id, "main", rf)
                    results[name].append(time.perf_counter() - t0)
    size_mb = args.size_mib * (1 << 20) / 1e6
    base = statistics.median(results["hf_hub_download"])
    print(f"{args.size_mib} MiB file, {args.runs} runs each, loopback local Hub server\n")
    print("| downloader | median s | MB/s | vs hf_hub_download |")
    print("|---|---|---|---|")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {size_mb / med:,.0f} | {base / med:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
