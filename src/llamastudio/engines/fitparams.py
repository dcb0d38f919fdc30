"""Run an engine's ``llama-fit-params`` for ``estimate --check`` (parsing and comparison:
``fit/fitparams.py``). Blocking (a subprocess with a timeout): call it off the event loop."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

from llamastudio.errors import InvalidInput
from llamastudio.fit.estimator import Estimate, estimate
from llamastudio.fit.fitparams import (
    FitCheck,
    FitReport,
    compare,
    fit_args,
    fit_view,
    help_arity,
    parse_report,
)
from llamastudio.fit.flags import ServerFlags
from llamastudio.gguf import GGUFModel
from llamastudio.hardware import Gpu

BINARY = "llama-fit-params"
TIMEOUT = 120.0  # seconds: a dry run reads the header and builds graphs, no weights
RUNS = 3  # tries for a whole log (it loses its tail when the process exits first: fit/fitparams.py)


def find_binary(server: Path | str | None) -> Path | None:
    """``llama-fit-params`` beside an engine's ``llama-server`` (release and source builds ship it)."""
    if server is None:
        return None
    path = Path(server).parent / BINARY
    return path if path.is_file() else None


@cache
def _arity(binary: str, mtime: float) -> dict[str, int]:
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30, check=False)
    return help_arity(out.stdout + out.stderr)


def run(binary: Path, model_path: Path, flags: ServerFlags, timeout: float = TIMEOUT) -> FitReport:
    """``llama-fit-params -m MODEL <the flags it takes> --fit-print on -lv 5``, parsed; run again
    (up to ``RUNS`` times) while its log comes back cut, which a loaded machine makes likely."""
    if not model_path.is_file():
        raise InvalidInput(f"--check needs a local model file; {model_path} is not one")
    for _ in range(RUNS):
        try:
            arity = _arity(str(binary), binary.stat().st_mtime)
            args, dropped = fit_args(flags, arity)
            argv = [str(binary), "-m", str(model_path), *args, "--fit-print", "on", "-lv", "5"]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise InvalidInput(f"{BINARY} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise InvalidInput(f"cannot run {binary}: {exc}") from None
        report = parse_report(argv, out.stdout, out.stderr, dropped)
        if out.returncode != 0 or not report.mib:
            tail = " ".join((out.stderr or out.stdout).strip().splitlines()[-3:])
            raise InvalidInput(f"{BINARY} failed (exit {out.returncode}): {tail[-400:]}")
        if report.log_complete:
            break
    return report


def check(
    binary: Path,
    model: GGUFModel,
    model_path: Path,
    flags: ServerFlags,
    gpus: tuple[Gpu, ...] = (),
    cpu: frozenset[str] | None = None,
    timeout: float = TIMEOUT,
    server: Estimate | None = None,
) -> FitCheck:
    """The estimate of what llama-fit-params counts, against what it prints (the bench calls this);
    ``server``: the llama-server estimate the differences are stated against (default: made here)."""
    report = run(binary, model_path, flags, timeout)
    server = server or estimate(model, flags, gpus, cpu=cpu)
    return compare(fit_view(model, flags, gpus, cpu), server, report)
