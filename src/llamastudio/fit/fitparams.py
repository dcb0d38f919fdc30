"""A second opinion from llama.cpp itself: what ``llama-fit-params --fit-print on`` projects for
the same model and flags, next to the studio's estimate (``llamastudio estimate --check``).

llama-fit-params dry-runs the model and context load without allocating (``common/fit.cpp``,
``common_fit_print``) and prints, per device, ``model context compute`` in whole MiB (rounded
down). At ``-lv 5`` its log also carries the dry run's KV/RS cache sizes and compute buffers with
two decimals, which this module reads too. What it counts differs from a running llama-server
in ways that are facts of llama.cpp, not errors of either side:

- it loads with ``load_mode = none`` (no mmap), so host weights are the tensors' padded sum, not
  the mapped span;
- the ``CPU_REPACK`` buffer is left out: it is neither a host buffer type nor a model device's;
- ``context`` is the KV cache and recurrent state only: the output (logits) buffer is left out;
- its context has llama.cpp's common defaults, not llama-server's: no unified KV cache (it has no
  ``-kvu``; a unified cache is passed as ``-np 1``, one stream of the same cells, which holds one
  recurrent state where llama-server holds one per slot), and logits reserved for every token of
  a micro-batch (``n_outputs_max = n_batch``) where llama-server reserves one row per sequence;
- it knows nothing of a projector or draft model (no ``-mm``/``-md``).

So the comparison is made against the studio's estimate *of what llama-fit-params counts*
(``fit_view``): the same arithmetic with those differences applied; the differences themselves
are listed beside it (``FitCheck.differences``). Running the binary is ``engines/fitparams.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llamastudio.fit.catalog import NARGS
from llamastudio.fit.estimator import HOST, estimate
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.usage import Estimate
from llamastudio.gguf import GGUFModel
from llamastudio.hardware import Gpu

MiB = 1024 * 1024
CATEGORIES = ("model", "context", "compute")
COMPUTE_TOLERANCE = 0.10  # the compute model is calibrated, not exact (compute.py)
# flags the studio renders that llama-fit-params has no use for, or that would change its output
_SKIP = {"-lm", "--load-mode", "-fit", "--fit", "-fitp", "--fit-print", "-lv", "--verbosity", "-v"}
_PRINT_ROW = re.compile(r"^(\S+) (\d+) (\d+) (\d+)\s*$")
_KV = re.compile(r"llama_kv_cache: size =\s+([\d.]+) MiB")
_RS = re.compile(r"llama_memory_recurrent: size =\s+([\d.]+) MiB")
_COMPUTE = re.compile(r"sched_reserve:\s+(\S+) compute buffer size =\s+([\d.]+) MiB")
_CTX = re.compile(r"llama_context: (n_ctx|n_ctx_seq|n_seq_max|n_batch|n_ubatch|n_outputs_max)\s+= (\d+)")
# the dry run's last log line (the host's row of the memory breakdown). llama.cpp's logger is an
# async worker that is never joined (common/log.cpp, llama.cpp#22142): a process that exits while
# it lags loses the log's tail, so a log without this line is cut and its figures are not used
_LOG_END = re.compile(r"common_memory_breakdown_print: \|\s+- Host\s+\|")


@dataclass
class FitReport:
    """What llama-fit-params printed: whole MiB per device and category (``Host`` for the CPU),
    and from its log the dry run's context and compute with two decimals."""

    argv: list[str]
    mib: dict[str, dict[str, int]]
    context_mib: float | None = None  # KV + RS over all devices
    compute_mib: dict[str, float] = field(default_factory=dict)  # per device (CPU: the host)
    context_params: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # the estimate's flags llama-fit-params lacks
    log_complete: bool = True  # False: its log was cut at exit, so no two-decimal figures from it

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "mib": self.mib,
            "context_mib": self.context_mib,
            "compute_mib": self.compute_mib,
            "context_params": self.context_params,
            "dropped": self.dropped,
            "log_complete": self.log_complete,
        }


def help_arity(text: str) -> dict[str, int]:
    """Each flag a llama.cpp ``--help`` lists → how many values it takes (its placeholders:
    ``-c, --ctx-size N`` one, ``--swa-full`` none, ``--control-vector-layer-range START END`` two;
    ``<…>``, ``[…]``, ``{…}`` are one placeholder even with spaces inside)."""
    out: dict[str, int] = {}
    flag = re.compile(r"--?[a-zA-Z][\w.+-]*")
    for line in text.splitlines():
        if not line.startswith("-") or line.startswith("---"):
            continue
        head = re.split(r"\s{2,}", re.sub(r",\s+", ", ", line.strip()), maxsplit=1)[0]
        names, rest = [], head
        while m := flag.match(rest):
            names.append(m.group(0))
            rest = rest[m.end() :]
            if not rest.startswith(", "):
                break
            rest = rest[2:]
        depth, count, inside = 0, 0, False
        for ch in rest.strip():
            depth += (ch in "<[{") - (ch in ">]}")
            if ch == " " and depth == 0:
                inside = False
            elif not inside:
                inside, count = True, count + 1
        for name in names:
            out[name] = count
    return out


def fit_args(flags: ServerFlags, arity: dict[str, int]) -> tuple[list[str], list[str]]:
    """llama-fit-params arguments for these llama-server flags: every flag it lists, plus ``-np``:
    with llama-server's unified KV cache ``-np 1`` (one stream of all the cells: the same KV
    cache), else its slots (one stream each, as llama-server). The rest is returned as dropped."""
    argv, dropped = ["-np", str(fit_sequences(flags))], []
    tokens = flags.with_(parallel=-1).to_args()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token.partition("=")[0] if token.startswith("--") else token
        n = 0 if "=" in token else arity.get(name, NARGS.get(name, 0))  # else llama-server's count
        group = tokens[i : i + 1 + n]
        i += 1 + n
        if name in _SKIP:
            continue
        if name in arity:
            argv += group
        elif name not in ("-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified"):  # said in differences
            dropped.append(" ".join(group))
    return argv, dropped


def fit_sequences(flags: ServerFlags) -> int:
    return 1 if flags.unified else flags.n_seq


def parse_report(argv: list[str], stdout: str, log: str, dropped: list[str]) -> FitReport:
    mib: dict[str, dict[str, int]] = {}
    for line in stdout.splitlines():
        if m := _PRINT_ROW.match(line.strip()):
            dev = HOST if m.group(1) == "Host" else m.group(1)
            mib[dev] = dict(zip(CATEGORIES, (int(m.group(i)) for i in (2, 3, 4)), strict=True))
    if not _LOG_END.search(log):  # cut: a KV size without its RS size, a first reserve's compute
        return FitReport(argv, mib, dropped=dropped, log_complete=False)
    caches = [float(x) for x in _KV.findall(log)] + [float(x) for x in _RS.findall(log)]
    compute: dict[str, float] = {}
    for name, value in _COMPUTE.findall(log):  # a re-reserved graph replaces the value
        compute[HOST if name.startswith("CPU") else name] = float(value)
    params: dict[str, int] = {}
    for key, value in _CTX.findall(log):
        params.setdefault(key, int(value))
    return FitReport(argv, mib, sum(caches) if caches else None, compute, params, dropped)


def fit_view(
    model: GGUFModel,
    flags: ServerFlags,
    gpus: tuple[Gpu, ...],
    cpu: frozenset[str] | None = None,
) -> Estimate:
    """The studio's estimate of what llama-fit-params counts for these flags (module docstring)."""
    view = flags.with_(
        load_mode="none",
        parallel=fit_sequences(flags),
        kv_unified=False,
        embedding=False,
        reranking=False,
        mmproj=None,
        draft_model=None,
    )
    est = estimate(model, view, gpus, cpu=cpu)
    return estimate(model, view, gpus, cpu=cpu, n_outputs=est.context.n_batch)


@dataclass
class Row:
    device: str
    category: str
    ours: int  # bytes, as llama-fit-params counts them
    theirs_mib: int  # whole MiB (rounded down)
    theirs_precise_mib: float | None  # from its log, where it logs the figure
    agree: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "category": self.category,
            "ours_mib": round(self.ours / MiB, 3),
            "fit_params_mib": self.theirs_mib,
            "fit_params_precise_mib": self.theirs_precise_mib,
            "diff_mib": round(self.ours / MiB - (self.theirs_precise_mib or self.theirs_mib), 3),
            "agree": self.agree,
        }


@dataclass
class FitCheck:
    report: FitReport
    rows: list[Row]
    differences: list[str]  # how llama-fit-params' count differs from llama-server's, in MiB

    @property
    def agree(self) -> bool:
        return all(r.agree for r in self.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "llama_fit_params": self.report.to_json(),
            "rows": [r.to_json() for r in self.rows],
            "agree": self.agree,
            "differences": self.differences,
            "tolerance": TOLERANCE,
        }


TOLERANCE = (
    "model and context: the same whole MiB as llama-fit-params (it rounds down), context also within "
    "0.01 MiB of the sizes its log gives; compute: within 10 % or 0.5 MiB of its logged buffer"
)


def compare(view: Estimate, server: Estimate, report: FitReport) -> FitCheck:
    """Rows per device and category (the view against llama-fit-params), and the differences
    between llama-fit-params' count and the server estimate."""
    rows: list[Row] = []
    context_total = sum(d.kv + d.rs for d in view.devices)
    for d in view.devices:
        theirs = report.mib.get(d.name)
        if theirs is None:
            continue
        repack = d.buffers.get("CPU_REPACK", 0)
        ours = {"model": d.model - repack, "context": d.kv + d.rs, "compute": d.compute}
        for cat in CATEGORIES:
            precise: float | None = None
            if cat == "compute":
                precise = report.compute_mib.get(d.name)
            elif cat == "context" and len(report.mib) == 1:
                precise = report.context_mib
            agree = ours[cat] // MiB == theirs[cat]
            if cat == "context" and precise is not None:
                agree = agree and abs(context_total / MiB - precise) <= 0.01
            if cat == "compute":
                ref = precise if precise is not None else theirs[cat] + 0.5
                agree = abs(ours[cat] / MiB - ref) <= max(COMPUTE_TOLERANCE * ref, 0.5)
            rows.append(Row(d.name, cat, ours[cat], theirs[cat], precise, agree))
    return FitCheck(report, rows, differences(view, server, report))


def differences(view: Estimate, server: Estimate, report: FitReport) -> list[str]:
    """What llama-fit-params leaves out or counts otherwise than the llama-server it projects."""
    out = []

    def total(est: Estimate, name: str) -> int:
        return sum(getattr(d, name) for d in est.devices)

    repack = sum(d.buffers.get("CPU_REPACK", 0) for d in view.devices)
    if repack:
        out.append(f"CPU_REPACK weights, not counted by llama-fit-params: {repack / MiB:.2f} MiB (host)")
    out.append(f"output buffer, not counted by llama-fit-params: {server.host.output / MiB:.2f} MiB (host)")
    extra = total(server, "mmproj") + total(server, "draft")
    if extra:
        out.append(f"projector and draft model, not counted by llama-fit-params: {extra / MiB:.2f} MiB")
    served = sum(d.model_logged or d.model for d in server.devices)
    read = total(view, "model") - repack
    if served != read:
        out.append(
            f"weights: llama-server logs {served / MiB:.2f} MiB (mapped file span + repacked copies), "
            f"llama-fit-params counts them read into memory, repacked ones left out ({read / MiB:.2f} MiB)"
        )
    c, v = server.context, view.context
    if total(server, "kv") != total(view, "kv"):
        out.append(
            f"KV: llama-server {total(server, 'kv') / MiB:.2f} MiB ({c.n_stream} × {c.n_ctx_seq} cells), "
            f"llama-fit-params {total(view, 'kv') / MiB:.2f} MiB ({v.n_stream} × {v.n_ctx_seq} cells; "
            "it has no unified KV cache)"
        )
    if total(server, "rs") != total(view, "rs"):
        out.append(
            f"recurrent state: llama-server {total(server, 'rs') / MiB:.2f} MiB (one per slot), "
            f"llama-fit-params {total(view, 'rs') / MiB:.2f} MiB (one per sequence it is given)"
        )
    ours, theirs = total(server, "compute") / MiB, total(view, "compute") / MiB
    if ours != theirs:
        out.append(
            f"compute: llama-server {ours:.2f} MiB; llama-fit-params reserves logits for every token "
            f"of a {v.n_ubatch}-token micro-batch: {theirs:.2f} MiB"
        )
    for flag in report.dropped:
        out.append(f"not passed to llama-fit-params (it does not take it): {flag}")
    return out
