"""Estimator vs the real llama-server, per buffer category, over tiny models and a grid of flags.

Runs the rig's llama-server (CPU) with ``-lv 4`` for every (model, settings) pair, parses the
buffer sizes it logs, runs our estimator on the same header and flags, and prints a table of
errors. llama.cpp logs MiB with two decimals, so "exact" means within that rounding (±0.005 MiB).

    .venv/bin/python -m bench.estimate_accuracy [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.rig import binaries
from tests.rig.factory import ARCHS, BUILDERS, Vocab

from llamastudio.errors import InvalidInput
from llamastudio.fit.buffers import MiB, parse_log
from llamastudio.fit.estimator import estimate
from llamastudio.fit.flags import parse_server_args
from llamastudio.gguf import load_model
from llamastudio.procs import stop_process

CATEGORIES = ("model", "kv", "rs", "output", "compute")


def make_models(root: Path) -> dict[str, Path]:
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    out = {}
    for arch in ARCHS:
        out[arch] = root / f"{arch}.gguf"
        BUILDERS[arch](out[arch], vocab)
    quantize = str(binaries.binary("llama-quantize"))
    for src, qtype in (("llama", "Q4_K_M"), ("qwen3moe", "Q8_0")):
        name = f"{src}-{qtype}"
        out[name] = root / f"{name}.gguf"
        subprocess.run([quantize, str(out[src]), str(out[name]), qtype], check=True, capture_output=True)
    return out


def grid(quick: bool) -> list[list[str]]:
    ctxs = ["512", "4096"] if not quick else ["1024"]
    parallel: list[list[str]] = [[], ["-np", "1"], ["-np", "3"], ["-np", "2", "-kvu"]]
    caches: list[list[str]] = [[], ["-ctk", "q8_0", "-ctv", "q8_0"], ["-ctk", "q4_0"]]
    fas: list[list[str]] = [["-fa", "on"], ["-fa", "off"]]
    ubs: list[list[str]] = [[], ["-ub", "128"]]
    if quick:
        parallel, caches, ubs = parallel[:2], caches[:2], ubs[:1]
    out = []
    for c, p, k, fa, ub in itertools.product(ctxs, parallel, caches, fas, ubs):
        if fa == ["-fa", "off"] and "-ctv" in k:
            continue  # llama.cpp refuses a quantized V cache without flash attention
        out.append(["-c", c, *p, *k, *fa, *ub])
    return out


def run_server(model: Path, args: list[str], log_path: Path) -> str:
    server = str(binaries.binary("llama-server"))
    argv = [
        server,
        "-m",
        str(model),
        "--port",
        "0",
        "-t",
        "2",
        "-lv",
        "4",
        "-fit",
        "off",
        "--no-webui",
        *args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                text = log_path.read_text(errors="replace")
                if "load_model: initializing" in text or "server is listening" in text:
                    break
                time.sleep(0.05)
        finally:
            stop_process(proc, grace=5)
    return log_path.read_text(errors="replace")


def measure(models: dict[str, Path], settings: list[list[str]], tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for name, path in models.items():
        gmodel = load_model(str(path))
        for args in settings:
            if name == "mamba" and "-ctv" in args:
                continue
            text = run_server(path, args, tmp / "server.log")
            logged = parse_log(text)
            try:
                est = estimate(gmodel, parse_server_args(args))
            except InvalidInput as exc:
                est, refused = None, str(exc)
            if not logged.context:  # llama-server refused: the estimator must refuse too
                error = next((ln for ln in text.splitlines() if " E " in ln), "no error line")
                agree = est is None
                rows.append(
                    {
                        "model": name,
                        "args": " ".join(args),
                        "refused": True,
                        "agree": agree,
                        "server": error.split(" E ", 1)[-1],
                        "ours": refused if est is None else "accepted",
                    }
                )
                continue
            if est is None:
                rows.append(
                    {
                        "model": name,
                        "args": " ".join(args),
                        "refused": False,
                        "agree": False,
                        "server": "loaded",
                        "ours": refused,
                    }
                )
                continue
            host = est.host
            row: dict[str, Any] = {"model": name, "args": " ".join(args)}
            for cat in CATEGORIES:
                row[f"{cat}_logged"] = logged.total(cat)
                value = (
                    host.model_logged
                    if cat == "model" and host.model_logged is not None
                    else getattr(host, cat)
                )
                row[f"{cat}_est"] = value / MiB
                row[f"{cat}_tol"] = logged.tolerance(cat)
            row["context"] = est.to_json() | {"devices": None}
            row["logged_ctx"] = logged.context
            rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "refused" not in r]
    refused = [r for r in rows if "refused" in r]
    agree = sum(1 for r in refused if r["agree"])
    lines = [
        f"{len(rows)} runs of the real llama-server: {len(ok)} loaded and compared; {len(refused)} refused "
        f"by llama-server or the estimator, {agree} of those refused by both",
        "",
    ]
    lines.append(
        "| category | runs exact (± log rounding) | max abs error MiB | max rel error | mean rel error |"
    )
    lines.append("|---|---|---|---|---|")
    for cat in CATEGORIES:
        errs = [(r[f"{cat}_est"] - r[f"{cat}_logged"], r[f"{cat}_logged"]) for r in ok]
        exact = sum(1 for r in ok if abs(r[f"{cat}_est"] - r[f"{cat}_logged"]) <= r[f"{cat}_tol"])
        rel = [abs(e) / v for e, v in errs if v > 0.05]
        lines.append(
            f"| {cat} | {exact}/{len(errs)} | {max(abs(e) for e, _ in errs):.3f} | "
            f"{max(rel, default=0):.1%} | {sum(rel) / max(len(rel), 1):.1%} |"
        )
    lines += [
        "",
        "compute error by buffer size (llama.cpp logs 2 decimals; allocator reuse dominates tiny buffers):",
        "| logged compute | runs | within 10% | max rel error | mean rel error |",
        "|---|---|---|---|---|",
    ]
    for lo, hi in ((0, 1), (1, 4), (4, 16), (16, 1e9)):
        sel = [
            abs(r["compute_est"] - r["compute_logged"]) / r["compute_logged"]
            for r in ok
            if lo <= r["compute_logged"] < hi
        ]
        if sel:
            label = f"{lo}–{hi:g} MiB" if hi < 1e9 else f"≥ {lo} MiB"
            lines.append(
                f"| {label} | {len(sel)} | {sum(e <= 0.10 for e in sel)} | {max(sel):.1%} | "
                f"{sum(sel) / len(sel):.1%} |"
            )
    worst = sorted(
        ok, key=lambda r: -abs(r["compute_est"] - r["compute_logged"]) / max(r["compute_logged"], 1e-9)
    )
    lines += [
        "",
        "worst compute rows:",
        "| model | flags | logged MiB | est MiB | error |",
        "|---|---|---|---|---|",
    ]
    for r in worst[:8]:
        err = (r["compute_est"] - r["compute_logged"]) / r["compute_logged"]
        logged, est = r["compute_logged"], r["compute_est"]
        lines.append(f"| {r['model']} | `{r['args']}` | {logged:.2f} | {est:.2f} | {err:+.1%} |")
    for r in ok:
        for cat in ("model", "kv", "rs", "output"):
            if abs(r[f"{cat}_est"] - r[f"{cat}_logged"]) > r[f"{cat}_tol"]:
                logged, est = r[f"{cat}_logged"], r[f"{cat}_est"]
                lines.append(f"MISMATCH {r['model']} `{r['args']}` {cat}: logged {logged:.2f} est {est:.3f}")
    for r in refused:
        if not r["agree"]:
            lines.append(f"DISAGREE {r['model']} `{r['args']}`: server: {r['server']} / ours: {r['ours']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small grid")
    ap.add_argument("--json", type=Path, help="also write every row as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        rows = measure(models, grid(args.quick), Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
