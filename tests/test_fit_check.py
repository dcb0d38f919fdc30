"""``estimate --check``: the studio's estimate against llama.cpp's own llama-fit-params (the rig's
binary), on every rig architecture and several quantizations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llamastudio.engines import fitparams
from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.fitparams import FitReport, compare, fit_args, fit_view, help_arity, parse_report
from llamastudio.gguf import load_model
from tests.rig import binaries
from tests.rig.factory import ARCHS, BUILDERS, Vocab

QUANTS = ("F16", "Q8_0", "Q4_0", "Q4_K_M", "IQ4_NL", "Q2_K")
SETTINGS = [
    ["-c", "4096", "-fa", "on"],
    ["-c", "2048", "-np", "3", "-fa", "off", "-ub", "256"],
    ["-c", "1024", "-np", "2", "-kvu", "-ctk", "q8_0", "-ctv", "q8_0", "-lm", "none", "-nr"],
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, vocab: Vocab) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fit-check")
    quantize = str(binaries.binary("llama-quantize"))
    out = {}
    for arch in ARCHS:
        src = root / f"{arch}.gguf"
        BUILDERS[arch](src, vocab)
        for q in QUANTS:
            path = src if q == "F16" else root / f"{arch}-{q}.gguf"
            if q != "F16":
                subprocess.run([quantize, str(src), str(path), q], check=True, capture_output=True)
            out[path.stem if q != "F16" else arch] = path
    return out


@pytest.fixture(scope="module")
def fit_binary() -> Path:
    path = fitparams.find_binary(binaries.binary("llama-server"))
    assert path is not None, "the rig builds llama-fit-params beside llama-server"
    return path


def test_agrees_with_llama_fit_params_on_every_rig_model(models: dict[str, Path], fit_binary: Path) -> None:
    checked, refused = 0, []
    for name, path in models.items():
        model = load_model(str(path))
        for args in SETTINGS:
            flags = parse_server_args(args)
            try:
                check = fitparams.check(fit_binary, model, path, flags)
            except InvalidInput as exc:  # llama.cpp refused: so must the estimator
                refused.append((name, str(exc)))
                with pytest.raises(InvalidInput):
                    estimate(model, flags)
                continue
            bad = [r.to_json() for r in check.rows if not r.agree]
            assert not bad, (name, args, bad)
            assert {r.category for r in check.rows} == {"model", "context", "compute"}
            assert any(line.startswith("output buffer, not counted") for line in check.differences)
            checked += 1
    assert checked >= len(models) * len(SETTINGS) - len(QUANTS)
    # the only refusal: a q8_0 K cache on the MLA model's 48-wide K head (block size 32)
    assert {n.split("-")[0] for n, _ in refused} <= {"deepseek2"}, refused


def test_arguments_are_the_servers_it_takes(fit_binary: Path) -> None:
    helptext = subprocess.run([str(fit_binary), "--help"], capture_output=True, text=True).stdout
    arity = help_arity(helptext)
    flags = parse_server_args(
        ["-c", "2048", "-kvu", "-np", "3", "-mm", "p.gguf", "--temp", "0.3", "-lm", "none"]
    )
    argv, dropped = fit_args(flags, arity)
    assert argv == ["-np", "1", "-c", "2048", "--temp", "0.3"]  # unified: one stream of the cells
    assert dropped == ["-mm p.gguf"]
    argv, _ = fit_args(parse_server_args(["-np", "3", "-ot", r"blk\.0\.=CPU"]), arity)
    assert argv == ["-np", "3", "-ot", r"blk\.0\.=CPU"]


def test_repacked_weights_are_what_llama_fit_params_leaves_out(
    models: dict[str, Path], fit_binary: Path
) -> None:
    path = models["llama-Q4_0"]
    check = fitparams.check(fit_binary, load_model(str(path)), path, parse_server_args(["-c", "512"]))
    assert check.agree
    repack = next(line for line in check.differences if line.startswith("CPU_REPACK"))
    assert float(repack.split(": ")[1].split()[0]) > 0.5


def test_cli_prints_both_and_json_carries_both(
    models: dict[str, Path], fit_binary: Path, tmp_path: Path
) -> None:
    path = models["gemma3-Q4_0"]
    base = [sys.executable, "-m", "llamastudio", "--data-dir", str(tmp_path / "d"), "estimate", str(path)]
    args = ["-c", "2048", "-np", "2", "--check", "--check-with", str(fit_binary)]
    env = {**os.environ, "LLAMASTUDIO_HARDWARE": "cpu"}
    out = subprocess.run([*base, *args, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["check"]["agree"] is True
    assert body["check"]["llama_fit_params"]["mib"]["CPU"]["compute"] > 0
    assert body["devices"][-1]["buffers"]["CPU_REPACK"] > 0
    text = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=120)
    assert "llama-fit-params" in text.stdout and "CPU_REPACK weights, not counted" in text.stdout
    remote = subprocess.run(
        [*base[:-1], "http://127.0.0.1:9/x.gguf", "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert remote.returncode != 0 and "Traceback" not in remote.stderr
    profile = subprocess.run(
        [*base, "--check", "--hardware", "cpu"], capture_output=True, text=True, timeout=60
    )
    assert profile.returncode != 0 and "cannot be combined with --hardware" in profile.stderr


def test_a_log_cut_at_exit_gives_no_two_decimal_figures(models: dict[str, Path], fit_binary: Path) -> None:
    """llama.cpp's logger never joins its worker, so a loaded machine loses the log's tail: a KV
    size without the recurrent state's once failed the hybrid model's row. Such a log is known
    as cut and only the whole MiB on stdout are compared."""
    path = models["granitehybrid-Q8_0"]
    argv = [str(fit_binary), "-m", str(path), "-c", "2048", "-np", "3", "--fit-print", "on", "-lv", "5"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    whole = fitparams_parse(out.stdout, out.stderr)
    if not whole.log_complete:  # cut in this run: the product runs it again (engines/fitparams.py)
        whole = fitparams.run(fit_binary, path, parse_server_args(["-c", "2048", "-np", "3"]))
    assert whole.log_complete and whole.context_mib and whole.compute_mib
    lines = out.stderr.splitlines()
    rs = next(i for i, line in enumerate(lines) if "llama_memory_recurrent: size" in line)
    cut = fitparams_parse(out.stdout, "\n".join(lines[:rs]))  # the KV line kept, the RS line lost
    assert not cut.log_complete and cut.context_mib is None and cut.compute_mib == {}
    assert cut.mib == whole.mib  # stdout is written before exit: its whole MiB stand
    model = load_model(str(path))
    flags = parse_server_args(["-c", "2048", "-np", "3"])
    check = compare(fit_view(model, flags, ()), estimate(model, flags), cut)
    assert check.agree and all(r.theirs_precise_mib is None for r in check.rows)


def fitparams_parse(stdout: str, log: str) -> FitReport:
    return parse_report(["llama-fit-params"], stdout, log, [])
