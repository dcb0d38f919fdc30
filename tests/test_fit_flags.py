"""Every llama-server flag of the pinned engine is understood, and the weights' buffers — CPU
repack, mapped span, load modes — match what the real llama-server logs, buffer by buffer."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from llamastudio.engines.capabilities import parse_help
from llamastudio.engines.command import build_command
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.buffers import MiB
from llamastudio.fit.catalog import LEGACY, NARGS, NOT_MODELLED
from llamastudio.fit.estimator import estimate
from llamastudio.fit.fitparams import help_arity
from llamastudio.fit.flags import not_modelled
from llamastudio.gguf import load_model
from llamastudio.hardware.cpu import features_from_system_info, repack_types, repacks
from llamastudio.hardware.profiles import parse_profile
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.server import LlamaServer

GiB = 1024 * MiB
_BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")
# a valid value for the modelled flags that check theirs; every other flag takes "1"
VALID = {
    "-fa": "on",
    "-sm": "layer",
    "-ctk": "q8_0",
    "-ctv": "f16",
    "-ctkd": "q8_0",
    "-ctvd": "f16",
    "-lm": "none",
    "-lzm": "off",
    "-ot": r"blk\.0\.=CPU",
    "-dev": "none",
    "-devd": "none",
    "--pooling": "mean",
    "-mm": "projector.gguf",
    "-md": "draft.gguf",
    "-ts": "1",
}


@pytest.fixture(scope="module")
def rig_model(tmp_path_factory: pytest.TempPathFactory, vocab: Vocab) -> Callable[[str, str], Path]:
    """``rig_model(arch, qtype)``: a rig model, quantized with the rig's llama-quantize (once)."""
    root = tmp_path_factory.mktemp("fit-flags")

    def get(arch: str, qtype: str) -> Path:
        src = root / f"{arch}.gguf"
        if not src.exists():
            BUILDERS[arch](src, vocab)
        out = src if qtype == "F16" else root / f"{arch}-{qtype}.gguf"
        if not out.exists():
            quantize = str(binaries.binary("llama-quantize"))
            subprocess.run([quantize, str(src), str(out), qtype], check=True, capture_output=True)
        return out

    return get


@pytest.fixture(scope="module")
def server_help() -> str:
    out = subprocess.run([str(binaries.binary("llama-server")), "--help"], capture_output=True, text=True)
    return out.stdout


def test_the_catalog_is_the_pinned_servers_help(server_help: str) -> None:
    """A new pin shows here which flags came and went (regenerate ``fit/catalog.py``)."""
    legacy = {w for w in LEGACY.split() if w.startswith("-")}
    assert help_arity(server_help) == {f: n for f, n in NARGS.items() if f not in legacy}
    assert set(parse_help(server_help)) <= set(NARGS)


def test_every_flag_of_the_help_is_accepted_with_its_values(server_help: str) -> None:
    value_of: dict[str, str] = {}  # every spelling of a help entry takes the entry's valid value
    for line in server_help.splitlines():
        names = list(help_arity(line))
        for name in names:
            value_of[name] = next((VALID[n] for n in names if n in VALID), "1")
    for flag, n in help_arity(server_help).items():
        value = value_of[flag]
        argv = [flag, *([value] * n), "-c", "512"]
        flags = parse_server_args(argv, keep_unknown=False)  # never "unknown flag"
        assert flags.ctx_size == 512, flag  # the values were taken as the flag's, not as flags
    with pytest.raises(InvalidInput, match="unknown flag '--frobnicate'"):
        parse_server_args(["--frobnicate"], keep_unknown=False)
    with pytest.raises(InvalidInput, match="-lm: expected one of"):
        parse_server_args(["-lm", "fast"])


def test_memory_flags_not_modelled_are_named(rig_model: Callable[[str, str], Path]) -> None:
    flags = parse_server_args(
        ["--lora", "a.gguf", "-cram", "4096", "--rpc", "h:1", "-sm", "row", "--temp", "0.2", "-t", "4"],
        keep_unknown=False,
    )
    lines = not_modelled(flags)
    assert [line.split(":")[0] for line in lines] == ["--lora", "-cram", "--rpc", "-sm row"]
    assert flags.extra == ("--lora", "a.gguf", "-cram", "4096", "--rpc", "h:1", "--temp", "0.2", "-t", "4")
    est = estimate(load_model(str(rig_model("llama", "F16"))), flags)
    assert sum(note.startswith("not modelled: ") for note in est.notes) == 4
    assert all(k in NARGS for k in NOT_MODELLED)


def test_load_modes_and_their_older_spellings() -> None:
    assert parse_server_args(["--no-mmap"]).load_mode == "none"
    assert parse_server_args(["--mlock"]).load_mode == "mmap+mlock"
    assert parse_server_args(["--mlock", "--no-mmap"]).load_mode == "mlock"
    assert parse_server_args(["-lm", "dio"]).no_mmap
    flags = parse_server_args(["--no-mmap", "-ncffn", "2", "-nr"])
    assert parse_server_args(flags.to_args()) == flags
    helps = subprocess.run([str(binaries.binary("llama-server")), "--help"], capture_output=True, text=True)
    caps = parse_help(helps.stdout)
    assert "--no-mmap" not in caps and "--mlock" not in caps  # b11434 has -lm instead
    new = Engine("rig", "rig", "external", "/", {"llama-server": "/bin/llama-server"}, capabilities=caps)
    argv = build_command(new, "m.gguf", flags, "127.0.0.1", 1).argv
    assert argv[argv.index("-lm") :][:2] == ["-lm", "none"] and "--no-mmap" not in argv
    assert argv[argv.index("-ncffn") + 1] == "2" and "-nr" in argv
    older = set(caps) - {"-lm", "--load-mode", "-ncffn", "--n-cpu-ffn"} | {"--no-mmap", "--mlock"}
    old = Engine(
        "old", "old", "external", "/", {"llama-server": "/bin/llama-server"}, capabilities=sorted(older)
    )
    argv = build_command(old, "m.gguf", flags, "127.0.0.1", 1).argv
    assert "--no-mmap" in argv and "-lm" not in argv
    assert argv[argv.index("-ot") + 1] == r"blk\.(0|1)\.ffn_(up|down|gate)\.=CPU"
    locked = build_command(old, "m.gguf", parse_server_args(["-lm", "mlock"]), "127.0.0.1", 1)
    assert locked.argv[-2:] == ["--no-mmap", "--mlock"]


def test_repack_rules_by_cpu_features() -> None:
    x86 = frozenset({"avx2"})
    assert repacks("Q4_0", 4096, x86) and not repacks("Q4_0", 4100, x86)  # rows by 8
    assert not repacks("Q8_0", 4096, x86 | {"avx512f"})  # x86 never repacks Q8_0 in b11434
    assert not repacks("Q2_K", 4096, x86) and repacks("Q2_K", 4096, x86 | {"avx512f"})
    arm = frozenset({"neon", "dotprod"})
    assert repacks("Q8_0", 4, arm) and repacks("Q4_0", 4, arm) and not repacks("Q4_0", 6, arm)
    assert repacks("Q4_0", 8, frozenset({"sve", "i8mm", "sve256"})) and not repacks("Q4_K", 8, frozenset())
    assert repack_types(x86) == {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    line = "system_info: n_threads = 2 | CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | OPENMP = 1 | REPACK = 1 |"
    assert features_from_system_info(line) == {"avx2", "avx512f"}
    assert features_from_system_info(line.replace("REPACK = 1 |", "")) == frozenset()


def test_a_gpu_in_the_model_keeps_cpu_weights_from_repacking(rig_model: Callable[[str, str], Path]) -> None:
    """From llama-model.cpp make_cpu_buft_list (no GPU here to log it): the first GPU's pinned host
    buffer comes before CPU_REPACK and takes every weight; with mmap that becomes the mapped span;
    --no-host skips it; -dev none leaves the model no GPU."""
    model = load_model(str(rig_model("llama", "Q4_0")))
    gpus = parse_profile("24GiB", 64 * GiB, 60 * GiB).gpus
    cpu = frozenset({"avx2"})

    def host(*args: str) -> dict[str, int]:
        return estimate(
            model, parse_server_args(["-c", "512", "-ngl", "0", *args]), gpus, cpu=cpu
        ).host.buffers

    assert set(host()) == {"CPU_Mapped"}
    assert set(host("-lm", "none")) == {"CUDA_Host"}
    assert set(host("--no-host")) == {"CPU_Mapped", "CPU_REPACK"}
    assert set(host("-dev", "none")) == {"CPU_Mapped", "CPU_REPACK"}
    assert set(host("--no-host", "-nr", "-lm", "none")) == {"CPU"}


def test_tensor_overrides_first_match_wins(rig_model: Callable[[str, str], Path]) -> None:
    model = load_model(str(rig_model("qwen3moe", "F16")))
    gpus = parse_profile("24GiB", 64 * GiB, 60 * GiB).gpus
    emb = next(t for t in model.tensors if t.name == "token_embd.weight")
    exps = [t for t in model.tensors if "_exps" in t.name]

    def run(*args: str) -> tuple[int, int]:
        est = estimate(model, parse_server_args(["-c", "512", "-ngl", "99", *args]), gpus, cpu=frozenset())
        return est.device("CUDA0").model, est.host.model

    gpu, cpu = run()
    assert run("-ot", "token_embd=CUDA0") == (gpu + emb.n_bytes, cpu - emb.n_bytes)  # 128-aligned already
    moved = sum(t.n_bytes for t in exps)
    assert run("--cpu-moe") == (gpu - moved, cpu + moved) == run("-ot", r"_exps\.=CPU")
    assert run("-ot", r"_exps\.=CUDA0", "--cpu-moe") == (gpu, cpu)  # -ot is tried first
    layer0 = sum(t.n_bytes for t in exps if t.name.startswith("blk.0."))
    assert run("-ncmoe", "1") == (gpu - layer0, cpu + layer0)
    with pytest.raises(InvalidInput, match="unknown buffer type 'CUDA1'"):
        run("-ot", "token_embd=CUDA1")
    with pytest.raises(InvalidInput, match="invalid regular expression"):
        run("-ot", "blk.(=CPU")


def test_kv_unified_per_slot_sizes_the_context_when_c_is_unset(rig_model: Callable[[str, str], Path]) -> None:
    model = load_model(str(rig_model("llama", "F16")))
    assert (
        estimate(model, parse_server_args(["-np", "3", "--kv-unified-per-slot", "1000"])).context.n_ctx
        == 3072
    )
    assert (
        estimate(model, parse_server_args(["--kv-unified-per-slot", "1000", "-c", "512"])).context.n_ctx
        == 512
    )


# the real server: each model buffer it logs, against the estimate's, per load mode
CASES = [
    ("llama", "Q4_0"),  # 2-D weights repacked (AVX2), token_embd (GET_ROWS) not
    ("gemma3", "Q4_0"),  # tied output: token_embd used again as a MUL_MAT weight
    ("qwen3moe", "IQ4_NL"),  # 3-D expert weights (MUL_MAT_ID) repacked
    ("deepseek2", "Q4_0"),  # 3-D MUL_MAT weights (attn_k_b/attn_v_b) are not
    ("llama", "Q8_0"),  # not repacked on x86
    ("mamba2", "Q2_K"),  # Q2_K: AVX-512 only
]
MODES = [[], ["-lm", "none"], ["-lm", "mmap+mlock"], ["-nr"], ["-lm", "none", "-nr"]]


@pytest.mark.parametrize(("arch", "qtype"), CASES)
def test_model_buffers_match_the_real_server(
    arch: str, qtype: str, rig_model: Callable[[str, str], Path], llama_server: Callable[..., LlamaServer]
) -> None:
    path = rig_model(arch, qtype)
    model = load_model(str(path))
    for mode in MODES:
        args = ["-c", "512", "-lv", "4", *mode]
        srv = llama_server(path, *args)
        log = srv.log()
        srv.stop()
        logged: dict[str, float] = defaultdict(float)
        for name, mib in _BUFFER.findall(log):
            logged[name] += float(mib)
        info = next(line for line in log.splitlines() if "system_info" in line and "CPU :" in line)
        est = estimate(model, parse_server_args(args), cpu=features_from_system_info(info))
        ours = {name: size / MiB for name, size in est.host.buffers.items()}
        assert set(ours) == set(logged), (arch, qtype, mode, logged, ours)
        for name, mib in logged.items():
            assert abs(ours[name] - mib) <= 0.005 + 1e-9, (arch, qtype, mode, name, mib, ours[name])
