"""Estimator vs the real llama-server, per buffer category, over tiny models and a grid of flags.

Runs the rig's llama-server (CPU) with ``-lv 4`` for every (model, settings) pair, parses the
buffer sizes it logs, runs our estimator on the same header and flags, and prints the errors per
category and per architecture, then the acceptance checks of issue 17. llama.cpp logs MiB with two
decimals, so "exact" means within that rounding (±0.005 MiB per logged line).

The grid: several sequences (split and unified KV) × small and larger contexts × micro-batch
sizes × flash attention on/off, quantized caches, and embedding/reranking models; every rig
architecture (dense, sliding window, MoE, MLA, Mamba-1, Mamba-2, attention + Mamba-2 hybrid,
BERT) and quantized files. The default run takes a few minutes on two cores; ``--quick`` is a
small slice for CI.

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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.rig import binaries, embed
from tests.rig.factory import ARCHS, BUILDERS, Vocab

from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.buffers import MiB, parse_log
from llamastudio.fit.estimator import estimate
from llamastudio.gguf import facts_from_model, load_model
from llamastudio.procs import stop_process

CATEGORIES = ("model", "kv", "rs", "output", "compute")
EXACT = ("model", "kv", "rs", "output")
# (name, source, llama-quantize type)
QUANTIZED = (("llama-Q4_K_M", "llama", "Q4_K_M"), ("qwen3moe-Q8_0", "qwen3moe", "Q8_0"))
ENCODERS: dict[str, Callable[[Path], None]] = {
    "bert-embed": embed.write_embedding,
    "bert-rerank": embed.write_reranker,
    "qwen3-embed": embed.write_qwen3_embedding,
    "qwen3-rerank": embed.write_qwen3_reranker,
}


def make_models(root: Path) -> dict[str, Path]:
    vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    out = {}
    for arch in ARCHS:
        out[arch] = root / f"{arch}.gguf"
        BUILDERS[arch](out[arch], vocab)
    quantize = str(binaries.binary("llama-quantize"))
    for name, src, qtype in QUANTIZED:
        out[name] = root / f"{name}.gguf"
        subprocess.run([quantize, str(out[src]), str(out[name]), qtype], check=True, capture_output=True)
    for name, write in ENCODERS.items():
        out[name] = root / f"{name}.gguf"
        write(out[name])
    return out


def grid(quick: bool) -> list[list[str]]:
    """Settings for the decoder models: sequences × contexts × micro-batches × flash attention
    with F16 caches, then quantized caches on a smaller product."""
    parallel: list[list[str]] = [
        [],
        ["-np", "1"],
        ["-np", "2"],
        ["-np", "4"],
        ["-np", "4", "-kvu"],
        ["-np", "8"],
    ]
    ctxs, ubs, fas = ["256", "2048"], ["32", "128", []], ["on", "off"]
    caches: list[list[str]] = [["-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"], ["-ctk", "q4_0", "-fa", "off"]]
    cache_np: list[list[str]] = [["-np", "1"], ["-np", "3"], ["-np", "4", "-kvu"]]
    cache_ubs: list[Any] = ["64", []]
    if quick:
        parallel, ctxs, ubs = [["-np", "1"], ["-np", "3"], ["-np", "4", "-kvu"]], ["512"], ["64"]
        cache_np, cache_ubs = [["-np", "2"]], [[]]
    out = []
    for c, p, ub, fa in itertools.product(ctxs, parallel, ubs, fas):
        out.append(["-c", c, *p, *(["-ub", ub] if ub else []), "-fa", fa])
    for k, p, ub in itertools.product(caches, cache_np, cache_ubs):
        out.append(["-c", "1024", *p, *(["-ub", ub] if ub else []), *k])
    return out


def encoder_grid(name: str, quick: bool) -> list[list[str]]:
    mode = "--reranking" if name.endswith("rerank") else "--embedding"
    out = [
        [mode, "-c", "512", "-fa", "on"],
        [mode, "-c", "512", "-ub", "128", "-fa", "off"],
        [mode, "-c", "1024", "-np", "2"],
        [mode, "-c", "2048", "-np", "3", "-ub", "256", "-fa", "off"],
    ]
    return out[:2] if quick else out


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


def measure(models: dict[str, Path], settings: list[list[str]] | None, tmp: Path) -> list[dict[str, Any]]:
    """One row per (model, settings): logged and estimated MiB per category, or a refusal.
    ``settings`` None: each model's own grid (decoders: ``grid()``, encoders: ``encoder_grid()``)."""
    rows = []
    for name, path in models.items():
        gmodel = load_model(str(path))
        arch = facts_from_model(gmodel).architecture
        own = encoder_grid(name, False) if name in ENCODERS else grid(False)
        for args in settings if settings is not None else own:
            rows.append(_row(name, arch, path, gmodel, args, tmp))
    return rows


def _row(name: str, arch: str, path: Path, gmodel: Any, args: list[str], tmp: Path) -> dict[str, Any]:
    text = run_server(path, args, tmp / "server.log")
    logged = parse_log(text)
    base = {"model": name, "arch": arch, "args": " ".join(args)}
    try:
        est, refused = estimate(gmodel, parse_server_args(args)), ""
    except InvalidInput as exc:
        est, refused = None, str(exc)
    if not logged.context or not logged.lines["compute"]:  # refused (or aborted): we must refuse too
        error = next((ln for ln in text.splitlines() if " E " in ln or "GGML_ASSERT" in ln), "no error line")
        ours = refused or "accepted"
        return base | {
            "refused": True,
            "agree": est is None,
            "server": error.split(" E ", 1)[-1],
            "ours": ours,
        }
    if est is None:
        return base | {"refused": False, "agree": False, "server": "loaded", "ours": refused}
    host = est.host
    row: dict[str, Any] = dict(base)
    for cat in CATEGORIES:
        row[f"{cat}_logged"] = logged.total(cat)
        value = host.model_logged if cat == "model" and host.model_logged is not None else getattr(host, cat)
        row[f"{cat}_est"] = value / MiB
        row[f"{cat}_tol"] = logged.tolerance(cat)
    row["context"] = est.to_json() | {"devices": None}
    row["logged_ctx"] = logged.context
    return row


def _exact(r: dict[str, Any], cat: str) -> bool:
    return abs(r[f"{cat}_est"] - r[f"{cat}_logged"]) <= r[f"{cat}_tol"]


def _rel(r: dict[str, Any]) -> float:
    """Signed relative compute error; within log rounding counts as 0."""
    if _exact(r, "compute"):
        return 0.0
    return (r["compute_est"] - r["compute_logged"]) / r["compute_logged"]


def acceptance(rows: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """Issue 17's acceptance checks: (what, passed, detail)."""
    ok = [r for r in rows if "refused" not in r]
    refused = [r for r in rows if "refused" in r]
    exact = sum(all(_exact(r, c) for c in EXACT) for r in ok)
    within = sum(abs(_rel(r)) <= 0.10 for r in ok)
    big = [r for r in ok if r["compute_logged"] >= 4]
    worst_under = min((_rel(r) for r in big), default=0.0)
    agree = sum(r["agree"] for r in refused)
    share = within / max(len(ok), 1)
    return [
        (
            "weights, KV, recurrent state and output exact in every run",
            exact == len(ok),
            f"{exact}/{len(ok)}",
        ),
        ("compute within 10 % in at least 95 % of runs", share >= 0.95, f"{within}/{len(ok)} = {share:.1%}"),
        (
            "compute never under by more than 10 % for buffers ≥ 4 MiB",
            worst_under >= -0.10,
            f"{len(big)} runs, worst {worst_under:+.1%}",
        ),
        ("refusals match llama.cpp's", agree == len(refused), f"{agree}/{len(refused)}"),
    ]


def by_architecture(rows: list[dict[str, Any]]) -> list[str]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if "refused" not in r:
            groups[r["arch"]].append(r)
    lines = [
        "| architecture | runs | weights/KV/RS/output exact | compute exact (± rounding) "
        "| compute within 10 % | worst under | worst over | mean abs error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch, rs in sorted(groups.items()):
        n, rels = len(rs), [_rel(r) for r in rs]
        exact = sum(all(_exact(r, c) for c in EXACT) for r in rs)
        compute = sum(_exact(r, "compute") for r in rs)
        within = sum(abs(e) <= 0.10 for e in rels)
        lines.append(
            f"| {arch} | {n} | {exact}/{n} | {compute}/{n} | {within}/{n} | {min(0.0, *rels):+.1%} "
            f"| {max(0.0, *rels):+.1%} | {sum(abs(e) for e in rels) / n:.2%} |"
        )
    return lines


def summarize(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "refused" not in r]
    refused = [r for r in rows if "refused" in r]
    agree = sum(1 for r in refused if r["agree"])
    lines = [
        f"{len(rows)} runs of the real llama-server: {len(ok)} loaded and compared; {len(refused)} refused "
        f"by llama-server or the estimator, {agree} of those refused by both",
        "",
        "| category | runs exact (± log rounding) | max abs error MiB | max rel error | mean rel error |",
        "|---|---|---|---|---|",
    ]
    for cat in CATEGORIES:
        errs = [(r[f"{cat}_est"] - r[f"{cat}_logged"], r[f"{cat}_logged"]) for r in ok]
        rel = [abs(e) / v for e, v in errs if v > 0.05]
        worst = max((abs(e) for e, _ in errs), default=0)
        lines.append(
            f"| {cat} | {sum(_exact(r, cat) for r in ok)}/{len(errs)} | {worst:.3f} "
            f"| {max(rel, default=0):.1%} | {sum(rel) / max(len(rel), 1):.1%} |"
        )
    lines += ["", "compute by architecture (CPU backend):", *by_architecture(rows)]
    lines += [
        "",
        "compute error by buffer size (errors within log rounding count as 0):",
        "| logged compute | runs | within 10% | max rel error | mean rel error |",
        "|---|---|---|---|---|",
    ]
    for lo, hi in ((0, 1), (1, 4), (4, 16), (16, 1e9)):
        sel = [abs(_rel(r)) for r in ok if lo <= r["compute_logged"] < hi]
        if sel:
            label = f"{lo}–{hi:g} MiB" if hi < 1e9 else f"≥ {lo} MiB"
            within = sum(e <= 0.10 for e in sel)
            lines.append(f"| {label} | {len(sel)} | {within} | {max(sel):.1%} | {sum(sel) / len(sel):.2%} |")
    worst = sorted((r for r in ok if _rel(r)), key=lambda r: -abs(_rel(r)))
    head = [
        "worst compute rows:",
        "| model | flags | logged MiB | est MiB | error |",
        "|---|---|---|---|---|",
    ]
    lines += ["", *(head if worst else ["no compute buffer outside log rounding"])]
    for r in worst[:8]:
        logged, est = r["compute_logged"], r["compute_est"]
        lines.append(f"| {r['model']} | `{r['args']}` | {logged:.2f} | {est:.2f} | {_rel(r):+.1%} |")
    for r in ok:
        for cat in EXACT:
            if not _exact(r, cat):
                logged, est = r[f"{cat}_logged"], r[f"{cat}_est"]
                lines.append(f"MISMATCH {r['model']} `{r['args']}` {cat}: logged {logged:.2f} est {est:.3f}")
    for r in refused:
        if not r["agree"]:
            lines.append(f"DISAGREE {r['model']} `{r['args']}`: server: {r['server']} / ours: {r['ours']}")
    lines += ["", "acceptance (issue 17):"]
    for what, passed, detail in acceptance(rows):
        lines.append(f"- {'PASS' if passed else 'FAIL'} {what}: {detail}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small slice of the grid (CI)")
    ap.add_argument("--json", type=Path, help="also write every row as JSON")
    args = ap.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp))
        rows = []
        for name, path in models.items():
            settings = encoder_grid(name, args.quick) if name in ENCODERS else grid(args.quick)
            rows += measure({name: path}, settings, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(summarize(rows))
    print(f"\n{len(rows)} runs in {time.monotonic() - started:.0f} s")
    return 0 if all(passed for _, passed, _ in acceptance(rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
