"""The safetensors engine kinds (vLLM, SGLang, LMDeploy) without a process: the flags they use
against the real CLIs' ``--help`` (``tests/fixtures/engines``), the defaults read from it, and each
family's plan (argv, memory per GPU, tensor parallel, the CPU build, refusals); plus the install
checks and interpreter lookup of ``engines/pyengines.py``.

Sizes: the files are the rig's tiny checkpoint (``tests/rig/checkpoints.py``), read for real;
for the memory rules its facts are scaled to an 8B BF16 model (16 GiB of weights, 32 layers,
8 KV heads of 128: 128 KiB of KV per token), so every term of a rule is visible.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from llamastudio.checkpoint import Checkpoint, read_checkpoint
from llamastudio.engines import pyengines
from llamastudio.engines.capabilities import parse_help
from llamastudio.engines.kinds.base import PORT, LaunchPlan, ModelRequest, flag_value
from llamastudio.engines.kinds.hfserve import (
    ACTIVATIONS,
    CPU_RUNTIME,
    LMDEPLOY,
    SGLANG,
    VLLM,
    HFServerKind,
    check_architecture,
)
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput, NotFound
from llamastudio.hardware.devices import Hardware
from llamastudio.hardware.profiles import parse_profile
from tests.rig import checkpoints as rig

GIB = 1 << 30
FIXTURES = Path(__file__).parent / "fixtures" / "engines"
HELP = {
    "vllm": "vllm-0.32.0-api_server-help.txt",
    "sglang": "sglang-0.5.23-launch_server-help.txt",
    "lmdeploy": "lmdeploy-0.18.0-serve-api_server-help.txt",
}
KINDS: dict[str, HFServerKind] = {"vllm": VLLM, "sglang": SGLANG, "lmdeploy": LMDEPLOY}
ENTRY = {
    "vllm": ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"],
    "sglang": ["/venv/bin/python", "-m", "sglang.launch_server"],
    "lmdeploy": ["/venv/bin/lmdeploy", "serve", "api_server"],
}
# every flag each kind puts in an argv or reads from the user's args
USED = {
    "vllm": [
        "--model",
        "--served-model-name",
        "--host",
        "--port",
        "--gpu-memory-utilization",
        "--max-model-len",
        "--tensor-parallel-size",
        "-tp",
        "--dtype",
        "--quantization",
    ],
    "sglang": [
        "--model-path",
        "--served-model-name",
        "--host",
        "--port",
        "--mem-fraction-static",
        "--context-length",
        "--tp-size",
        "--tensor-parallel-size",
    ],
    "lmdeploy": [
        "--model-name",
        "--server-name",
        "--server-port",
        "--cache-max-entry-count",
        "--session-len",
        "--tp",
        "--backend",
    ],
}
WEIGHTS = 16 * GIB  # an 8B model in BF16
KV_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V × layers × KV heads × head size × 2 bytes
CTX = 8192  # its max_position_embeddings: 1 GiB of KV


def help_text(family: str) -> str:
    return (FIXTURES / HELP[family]).read_text()


def vllm_architectures() -> list[str]:
    return (FIXTURES / "vllm-0.32.0-architectures.txt").read_text().split()


def make_engine(family: str, **validation: object) -> Engine:
    """An engine as ``pyengines.register`` records it, from the fixtures instead of a probe."""
    text = help_text(family)
    archs = vllm_architectures() if family == "vllm" else ["LlamaForCausalLM", "Qwen2ForCausalLM"]
    return Engine(
        id=f"{family}-test",
        name=f"{family} test",
        kind="venv",
        root="/venv",
        binaries={"python": "/venv/bin/python", "entry": ENTRY[family][0]},
        version="0.0.1",
        validation={
            "ok": True,
            "entry": ENTRY[family],
            "defaults": pyengines.help_defaults(text, pyengines.FAMILIES[family].memory_flags),
            "architectures": archs,
        }
        | validation,
        capabilities=parse_help(text),
        family=family,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Checkpoint, rig.Expected]:
    directory = tmp_path_factory.mktemp("ck") / "llama"
    expected = rig.write_checkpoint(directory)
    return directory, read_checkpoint(directory), expected


@pytest.fixture(scope="module")
def big(tiny: tuple[Path, Checkpoint, rig.Expected]) -> Checkpoint:
    """The tiny checkpoint's facts scaled to an 8B model (same files, same architecture)."""
    ck = tiny[1]
    arch = replace(ck.arch, layers=32, attention_heads=32, kv_heads=8, head_dim=128, ctx_train=CTX)
    return replace(ck, arch=arch, weight_bytes=WEIGHTS)


def request(
    directory: Path, ck: Checkpoint | None, *args: str, auto: bool = False, **env: str
) -> ModelRequest:
    return ModelRequest(name="m", args=list(args), auto=auto, model_path=directory, checkpoint=ck, env=env)


def hw(spec: str) -> Hardware:
    return parse_profile(spec, ram_total=64 * GIB, ram_free=60 * GIB, cores=8)


def plan(
    family: str, directory: Path, ck: Checkpoint, spec: str, *args: str, auto: bool = False
) -> LaunchPlan:
    return KINDS[family].plan(request(directory, ck, *args, auto=auto), make_engine(family), hw(spec))


def model_args(family: str, directory: Path) -> list[str]:
    if family == "lmdeploy":
        return [str(directory), "--model-name", "m", "--server-name", "127.0.0.1", "--server-port", PORT]
    model = "--model" if family == "vllm" else "--model-path"
    return [model, str(directory), "--served-model-name", "m", "--host", "127.0.0.1", "--port", PORT]


# -- the flags against the real --help ------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(HELP))
def test_the_real_help_lists_every_flag_the_kind_uses(family: str) -> None:
    flags = set(parse_help(help_text(family)))
    missing = [f for f in USED[family] if f not in flags]
    assert not missing, f"{family} --help does not list {missing}"
    kind = KINDS[family]
    read = [*kind.fraction_flags, *kind.ctx_flags, *kind.tp_flags]
    # a flag the kind reads that the help does not list must at least be what argparse takes as
    # an abbreviation: the unique prefix of one listed flag (SGLang's `--tp` → `--tp-size`)
    for flag in read:
        if flag not in flags:
            longer = [f for f in flags if f.startswith(flag) and f.startswith("--")]
            assert len(longer) == 1, f"{family} reads {flag}, which its --help neither lists nor abbreviates"


@pytest.mark.parametrize("family", sorted(HELP))
def test_every_flag_of_a_planned_argv_is_in_the_help(
    family: str, tiny: tuple[Path, Checkpoint, rig.Expected]
) -> None:
    directory, ck, _ = tiny
    for auto in (False, True):
        argv = plan(family, directory, ck, "1x24GiB", auto=auto).argv
        own = argv[len(ENTRY[family]) :]
        used = [t for t in own if t.startswith("-")]
        assert used and set(used) <= set(parse_help(help_text(family))), used


def test_parse_help_reads_aliases_and_short_flags() -> None:
    vllm = parse_help(help_text("vllm"))
    assert {"--tensor-parallel-size", "-tp", "--device-memory-utilization"} <= set(vllm)
    assert "--help" in vllm and not any(f.isupper() for f in vllm)  # no placeholders (GPU_MEMORY_...)
    sglang = parse_help(help_text("sglang"))
    assert {"--tp-size", "--tensor-parallel-size", "--model-path", "--model"} <= set(sglang)  # aliases
    assert "--tp" not in sglang  # read by the kind only as argparse's abbreviation of --tp-size
    lmdeploy = parse_help(help_text("lmdeploy"))
    assert "--model-path" not in lmdeploy and "--port" not in lmdeploy  # a positional path, --server-port


def test_help_defaults_from_the_real_help() -> None:
    fam = pyengines.FAMILIES
    vllm = pyengines.help_defaults(help_text("vllm"), fam["vllm"].memory_flags)
    assert vllm == {"--gpu-memory-utilization": "0.92", "--tensor-parallel-size": "1"}  # no default ctx
    lmdeploy = pyengines.help_defaults(help_text("lmdeploy"), fam["lmdeploy"].memory_flags)
    assert lmdeploy["--cache-max-entry-count"] == "0.8" and lmdeploy["--tp"] == "1"
    assert lmdeploy.get("--session-len") in (None, "None")  # its help says None: no number invented
    # SGLang's help states no default for --mem-fraction-static (it picks one from the GPU's size)
    assert pyengines.help_defaults(help_text("sglang"), fam["sglang"].memory_flags) == {}


def test_help_defaults_of_a_made_up_help() -> None:
    text = "\n".join(
        [
            "usage: x [--a A] [--b B]",
            "  --a A   The a. (default: 0.5)",
            "  --b B   The b, wrapped over",
            "          two lines. Default: 7. Type: int",
            "  --c C   No default stated.",
        ]
    )
    assert pyengines.help_defaults(text, ("--a", "--b", "--zzz")) == {"--a": "0.5", "--b": "7"}


def test_help_defaults_takes_the_flags_own_line() -> None:
    assert pyengines.help_defaults(help_text("vllm"), ("--port",)) == {"--port": "8000"}


# -- vLLM ----------------------------------------------------------------------------------------
def test_vllm_on_one_gpu_takes_the_engine_default_fraction_of_it(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    p = plan("vllm", directory, big, "1x24GiB")
    assert p.argv == [*ENTRY["vllm"], *model_args("vllm", directory), "--max-model-len", str(CTX)]
    assert p.reserve == {"CUDA0": int(0.92 * 24 * GIB)}  # 0.92 from its --help, whatever the model
    assert p.env == {} and p.threads == 0
    # the weights and one full context need (16 + 1 + 0.5) / 24 = 0.73 → 0.75: 0.92 is warned about
    (warning,) = p.warnings
    assert "--gpu-memory-utilization 0.92 reserves 22.1 GiB" in warning and "0.75 holds" in warning
    assert (
        "weights 16.00 GiB" in p.reasons[0] and "128.0 KiB per token × 8192 tokens = 1.00 GiB" in p.reasons[0]
    )


def test_vllm_reads_the_default_the_engine_states(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    engine = make_engine("vllm", defaults={"--gpu-memory-utilization": "0.9"})  # an older vLLM
    p = VLLM.plan(request(directory, big), engine, hw("1x24GiB"))
    assert p.reserve == {"CUDA0": int(0.9 * 24 * GIB)}
    bare = make_engine("vllm", defaults={})  # none stated: the family's known default
    assert VLLM.plan(request(directory, big), bare, hw("1x24GiB")).reserve == {"CUDA0": int(0.92 * 24 * GIB)}


def test_vllm_auto_picks_the_fraction_that_holds_the_model(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    p = plan("vllm", directory, big, "1x24GiB", auto=True)
    need = WEIGHTS + KV_PER_TOKEN * CTX + ACTIVATIONS
    assert math.ceil(need / (24 * GIB) * 20) / 20 == 0.75
    assert p.argv == [
        *ENTRY["vllm"],
        *model_args("vllm", directory),
        "--gpu-memory-utilization",
        "0.75",
        "--max-model-len",
        str(CTX),
    ]
    assert p.reserve == {"CUDA0": int(0.75 * 24 * GIB)} and p.reserve["CUDA0"] >= need
    assert p.warnings == [] and any(r.startswith("--gpu-memory-utilization 0.75:") for r in p.reasons)
    # a fraction the user gave wins over auto, and is not added twice
    given = plan("vllm", directory, big, "1x24GiB", "--gpu-memory-utilization=0.85", auto=True)
    assert flag_value(given.argv, ("--gpu-memory-utilization",)) == "0.85"
    assert sum(a.startswith("--gpu-memory-utilization") for a in given.argv) == 1
    assert given.reserve == {"CUDA0": int(0.85 * 24 * GIB)}


def test_vllm_user_fraction_above_the_suggestion_is_warned_about(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    high = plan("vllm", directory, big, "1x24GiB", "--gpu-memory-utilization", "0.85")
    assert high.reserve == {"CUDA0": int(0.85 * 24 * GIB)}
    assert len(high.warnings) == 1 and "0.75 holds its weights and one full context" in high.warnings[0]
    near = plan("vllm", directory, big, "1x24GiB", "--gpu-memory-utilization", "0.78")  # within 0.05
    assert near.warnings == [] and near.reserve == {"CUDA0": int(0.78 * 24 * GIB)}
    low = plan("vllm", directory, big, "1x24GiB", "--gpu-memory-utilization", "0.5")
    assert low.warnings == ["--gpu-memory-utilization 0.5 cannot even hold the weights"]
    for bad, why in (("abc", "must be a number"), ("0", "must be positive"), ("nan", "must be positive")):
        with pytest.raises(InvalidInput, match=why):
            plan("vllm", directory, big, "1x24GiB", "--gpu-memory-utilization", bad)


def test_vllm_tensor_parallel_splits_the_weights(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    for tp_args in (["--tensor-parallel-size", "2"], ["-tp", "2"], ["--tensor-parallel-size=2"]):
        p = plan("vllm", directory, big, "2x80GiB", *tp_args)
        assert p.reserve == {"CUDA0": int(0.92 * 80 * GIB), "CUDA1": int(0.92 * 80 * GIB)}, tp_args
    # per GPU: 8 GiB of weights + 0.5 GiB of KV + 0.5 GiB = 9/80 → 0.15
    auto = plan("vllm", directory, big, "2x80GiB", "-tp", "2", auto=True)
    assert flag_value(auto.argv, ("--gpu-memory-utilization",)) == "0.15"
    assert auto.reserve == {"CUDA0": int(0.15 * 80 * GIB), "CUDA1": int(0.15 * 80 * GIB)}
    one = plan("vllm", directory, big, "2x80GiB", auto=True)  # no tp: one GPU of the two
    assert one.reserve == {"CUDA0": int(0.25 * 80 * GIB)}  # 17.5 / 80 → 0.25
    with pytest.raises(InvalidInput, match=r"tensor parallel size 2: only 1 GPU\(s\) here"):
        plan("vllm", directory, big, "1x24GiB", "--tensor-parallel-size", "2")
    with pytest.raises(InvalidInput, match="tensor parallel size 4: only 2 GPU"):
        plan("vllm", directory, big, "2x80GiB", "-tp", "4")


def test_vllm_on_cpu_sets_the_kv_space_and_reserves_ram(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    p = plan("vllm", directory, big, "cpu")
    assert p.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}  # 1 GiB: one full context of 8192 tokens
    assert p.reserve == {"CPU": WEIGHTS + 1 * GIB + CPU_RUNTIME}
    assert CPU_RUNTIME == 2 * GIB and p.threads == 8 and p.warnings == []
    assert p.argv == [*ENTRY["vllm"], *model_args("vllm", directory), "--max-model-len", str(CTX)]
    # a longer context: 20000 × 128 KiB = 2.44 GiB → 3 GiB of KV space
    longer = plan("vllm", directory, big, "cpu", "--max-model-len", "20000")
    assert longer.env == {"VLLM_CPU_KVCACHE_SPACE": "3"}
    assert longer.reserve == {"CPU": WEIGHTS + 3 * GIB + CPU_RUNTIME}
    assert longer.argv.count("--max-model-len") == 1  # the user's, not a second one
    # the configuration's environment sets it: that is what is reserved
    mine = VLLM.plan(request(directory, big, VLLM_CPU_KVCACHE_SPACE="7"), make_engine("vllm"), hw("cpu"))
    assert mine.env == {"VLLM_CPU_KVCACHE_SPACE": "7"} and mine.reserve == {
        "CPU": WEIGHTS + 7 * GIB + CPU_RUNTIME
    }
    with pytest.raises(InvalidInput, match="VLLM_CPU_KVCACHE_SPACE '4G'"):
        VLLM.plan(request(directory, big, VLLM_CPU_KVCACHE_SPACE="4G"), make_engine("vllm"), hw("cpu"))


def test_vllm_on_cpu_with_the_tiny_checkpoint(tiny: tuple[Path, Checkpoint, rig.Expected]) -> None:
    directory, ck, expected = tiny
    assert ck.weight_bytes == expected.weight_bytes
    p = plan("vllm", directory, ck, "cpu")
    # 2 layers × 2 KV heads × 16 × 2 × 2 bytes = 256 B per token × 2048: far under 1 GiB → 1
    assert ck.kv_bytes_per_token() == 256 and ck.arch.ctx_train == 2048
    assert p.env == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert p.reserve == {"CPU": expected.weight_bytes + GIB + CPU_RUNTIME}
    assert p.argv[-2:] == ["--max-model-len", "2048"]


# -- SGLang --------------------------------------------------------------------------------------
def test_sglang_takes_its_fraction_of_each_gpu(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    assert make_engine("sglang").validation["defaults"] == {}  # its help states none
    p = plan("sglang", directory, big, "1x24GiB")
    assert p.argv == [*ENTRY["sglang"], *model_args("sglang", directory), "--context-length", str(CTX)]
    assert p.reserve == {"CUDA0": int(SGLANG.fraction_default * 24 * GIB)}
    assert SGLANG.fraction_default == 0.88
    assert len(p.warnings) == 1 and "--mem-fraction-static 0.88" in p.warnings[0]
    auto = plan("sglang", directory, big, "1x24GiB", auto=True)
    assert flag_value(auto.argv, ("--mem-fraction-static",)) == "0.75"
    assert auto.reserve == {"CUDA0": int(0.75 * 24 * GIB)} and auto.warnings == []
    tp = plan("sglang", directory, big, "2x80GiB", "--tp-size", "2", "--mem-fraction-static", "0.5")
    assert tp.reserve == {"CUDA0": int(0.5 * 80 * GIB), "CUDA1": int(0.5 * 80 * GIB)}
    assert "--tp-size" in tp.argv and tp.argv[-2:] == ["--context-length", str(CTX)]
    alias = plan("sglang", directory, big, "2x80GiB", "--tensor-parallel-size", "2", auto=True)
    assert flag_value(alias.argv, ("--mem-fraction-static",)) == "0.15" and len(alias.reserve) == 2
    with pytest.raises(InvalidInput, match="only 1 GPU"):
        plan("sglang", directory, big, "1x24GiB", "--tp-size", "2")


def test_sglang_and_lmdeploy_need_a_gpu(tiny: tuple[Path, Checkpoint, rig.Expected]) -> None:
    directory, ck, _ = tiny
    for family, label in (("sglang", "SGLang"), ("lmdeploy", "LMDeploy")):
        with pytest.raises(InvalidInput) as err:
            plan(family, directory, ck, "cpu")
        assert err.value.message.startswith(f"{label} needs a GPU and this machine has none")
        assert "vllm-cpu" in err.value.message  # what to do instead


# -- LMDeploy ------------------------------------------------------------------------------------
def test_lmdeploy_reserves_the_weights_and_its_share_of_the_rest(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    assert make_engine("lmdeploy").validation["defaults"]["--cache-max-entry-count"] == "0.8"
    p = plan("lmdeploy", directory, big, "1x24GiB")
    assert p.argv == [*ENTRY["lmdeploy"], *model_args("lmdeploy", directory), "--session-len", str(CTX)]
    assert p.reserve == {"CUDA0": WEIGHTS + int(0.8 * (24 * GIB - WEIGHTS))}
    # KV + activations need 1.5 of the 8 GiB left → 0.2; 0.8 is warned about
    assert len(p.warnings) == 1 and "0.2 holds" in p.warnings[0]
    auto = plan("lmdeploy", directory, big, "1x24GiB", auto=True)
    assert flag_value(auto.argv, ("--cache-max-entry-count",)) == "0.2"
    assert auto.reserve == {"CUDA0": WEIGHTS + int(0.2 * 8 * GIB)} and auto.warnings == []
    assert auto.reserve["CUDA0"] >= WEIGHTS + KV_PER_TOKEN * CTX + ACTIVATIONS


def test_lmdeploy_tensor_parallel_splits_the_weights(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    half = WEIGHTS // 2
    p = plan("lmdeploy", directory, big, "2x80GiB", "--tp", "2", "--cache-max-entry-count", "0.5")
    per_gpu = half + int(0.5 * (80 * GIB - half))
    assert p.reserve == {"CUDA0": per_gpu, "CUDA1": per_gpu}
    auto = plan("lmdeploy", directory, big, "2x80GiB", "--tp=2", auto=True)
    # per GPU 8 GiB of weights, then 1 GiB (KV half + activations) of the 72 left → 0.05
    assert flag_value(auto.argv, ("--cache-max-entry-count",)) == "0.05"
    assert auto.reserve == {"CUDA0": half + int(0.05 * 72 * GIB), "CUDA1": half + int(0.05 * 72 * GIB)}
    with pytest.raises(InvalidInput, match="tensor parallel size 4: only 2 GPU"):
        plan("lmdeploy", directory, big, "2x80GiB", "--tp", "4")
    with pytest.raises(InvalidInput, match="tensor parallel size must be positive"):
        plan("lmdeploy", directory, big, "2x80GiB", "--tp", "-1")


def test_a_given_context_is_not_added_again(
    tiny: tuple[Path, Checkpoint, rig.Expected], big: Checkpoint
) -> None:
    directory, _, _ = tiny
    p = plan("lmdeploy", directory, big, "1x24GiB", "--session-len", "4096", auto=True)
    assert p.argv.count("--session-len") == 1 and flag_value(p.argv, ("--session-len",)) == "4096"
    assert "× 4096 tokens = 0.50 GiB" in p.reasons[0]
    # an engine whose help lacks the flag gets none added
    engine = make_engine("lmdeploy")
    engine.capabilities = [f for f in engine.capabilities if f != "--session-len"]
    bare = LMDEPLOY.plan(request(directory, big), engine, hw("1x24GiB"))
    assert "--session-len" not in bare.argv


# -- refusals, whatever the family ---------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(KINDS))
def test_an_unsupported_architecture_is_refused_before_a_start(
    family: str, tiny: tuple[Path, Checkpoint, rig.Expected]
) -> None:
    directory, ck, _ = tiny
    odd = replace(ck, arch=replace(ck.arch, architectures=("TotallyNewForCausalLM",)))
    with pytest.raises(InvalidInput, match="cannot run TotallyNewForCausalLM") as err:
        plan(family, directory, odd, "1x24GiB")
    assert "GGUF" in err.value.message
    # an engine that listed no architectures (its probe could not ask) does not refuse
    check_architecture(odd.arch.architectures, make_engine(family, architectures=[]))


@pytest.mark.parametrize("family", sorted(KINDS))
def test_a_gguf_request_is_refused(family: str, tmp_path: Path) -> None:
    gguf = ModelRequest(name="m", model_path=tmp_path / "m-Q4_K_M.gguf", checkpoint=None)
    with pytest.raises(InvalidInput, match=r"serves safetensors checkpoints .* not GGUF files"):
        KINDS[family].plan(gguf, make_engine(family), hw("1x24GiB"))


@pytest.mark.parametrize("family", sorted(KINDS))
def test_no_engine_or_an_unprobed_one_is_refused(
    family: str, tiny: tuple[Path, Checkpoint, rig.Expected]
) -> None:
    directory, ck, _ = tiny
    with pytest.raises(InvalidInput, match="serves safetensors checkpoints"):
        KINDS[family].plan(request(directory, ck), None, hw("1x24GiB"))
    unprobed = make_engine(family, entry=None)
    with pytest.raises(InvalidInput, match="not probed yet"):
        KINDS[family].plan(request(directory, ck), unprobed, hw("1x24GiB"))


def test_the_three_kinds() -> None:
    assert {k.name for k in KINDS.values()} == {"vllm", "sglang", "lmdeploy"}
    assert all(k.formats == ("safetensors",) for k in KINDS.values())
    assert VLLM.runs_on_cpu and not SGLANG.runs_on_cpu and not LMDEPLOY.runs_on_cpu
    assert VLLM.takes_key(make_engine("vllm")) and VLLM.key_env(None) == "VLLM_API_KEY"
    assert not LMDEPLOY.takes_key(make_engine("lmdeploy"))
    assert VLLM.fatal.search("torch.OutOfMemoryError: CUDA out of memory")
    assert LMDEPLOY.fatal.search("RuntimeError: No enough gpu memory for the weights")
    assert not SGLANG.fatal.search("INFO:     Uvicorn running on http://127.0.0.1:30000")


def test_flag_value_takes_the_last_value_in_either_spelling() -> None:
    args = ["--tp", "2", "--x", "--tp=4", "--tpx", "9"]
    assert flag_value(args, ("--tp",)) == "4"
    assert flag_value(["-tp", "3"], ("--tensor-parallel-size", "-tp")) == "3"
    assert flag_value(["--tp"], ("--tp",)) is None  # no value after it
    assert flag_value([], ("--tp",)) is None


# -- pyengines: what install and registration accept --------------------------------------------
def test_the_families() -> None:
    assert set(pyengines.FAMILIES) == {"vllm", "sglang", "lmdeploy"}
    assert pyengines.FAMILIES["vllm"].packages == ("vllm", "vllm-cpu")
    assert pyengines.FAMILIES["vllm"].help_flag == "--help=all"  # plain --help lists groups only
    for name, family in pyengines.FAMILIES.items():
        assert family.name == name and pyengines.family_named(name) is family
        assert KINDS[name].fraction_flags[0] in family.memory_flags
    with pytest.raises(
        InvalidInput, match=r"unknown engine family 'llama\.cpp': one of lmdeploy, sglang, vllm"
    ):
        pyengines.family_named("llama.cpp")


def test_entry_of_each_family() -> None:
    py = Path("/venv/bin/python")
    f = pyengines.FAMILIES
    assert pyengines.entry_of(py, f["vllm"]) == [str(py), "-m", "vllm.entrypoints.openai.api_server"]
    assert pyengines.entry_of(py, f["sglang"]) == [str(py), "-m", "sglang.launch_server"]
    assert pyengines.entry_of(py, f["lmdeploy"]) == [
        str(py),
        "-m",
        "lmdeploy.cli.entrypoint",
        "serve",
        "api_server",
    ]


@pytest.mark.parametrize(
    "version",
    ["1.0; rm -rf /", "latest", "", "0.32.0\n", " 0.32.0", "0.32.0 --index-url=x", "1", ">=0.3", "v0.32.0"],
)
def test_check_install_refuses_what_is_not_a_version(version: str) -> None:
    with pytest.raises(InvalidInput, match="give a release number"):
        pyengines.check_install(pyengines.FAMILIES["vllm"], version, "vllm")


def test_check_install_takes_only_the_familys_packages() -> None:
    vllm = pyengines.FAMILIES["vllm"]
    for version in ("0.32.0", "0.6", "0.18.0.post1", "2024.1.1.1"):
        pyengines.check_install(vllm, version, "vllm")
    pyengines.check_install(vllm, "0.32.0", "vllm-cpu")
    for family, package in (
        ("vllm", "torch"),
        ("vllm", "sglang"),
        ("sglang", "vllm-cpu"),
        ("lmdeploy", "lmdeploy "),
    ):
        with pytest.raises(InvalidInput, match=f"package {package!r}"):
            pyengines.check_install(pyengines.FAMILIES[family], "1.0.0", package)


def test_python_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no bin/python in this directory"):
        pyengines.python_of(tmp_path)
    (tmp_path / "bin").mkdir()
    python = tmp_path / "bin" / "python"
    python.write_text("")
    assert pyengines.python_of(tmp_path) == python
    assert pyengines.python_of(python) == python  # the interpreter itself
    with pytest.raises(NotFound, match="no such file"):
        pyengines.python_of(tmp_path / "missing")


def test_python_of_a_console_script(tmp_path: Path) -> None:
    script = tmp_path / "lmdeploy"
    script.write_text(
        "#!/opt/envs/lm/bin/python3.11\n# -*- coding: utf-8 -*-\nimport sys\n"
        "from lmdeploy.cli.entrypoint import run\nsys.exit(run())\n"
    )
    assert pyengines.python_of(script) == Path("/opt/envs/lm/bin/python3.11")
    shell = tmp_path / "lmdeploy-sh"
    shell.write_text('#!/bin/sh\nexec lmdeploy "$@"\n')
    with pytest.raises(InvalidInput, match="neither a Python interpreter nor a Python console script"):
        pyengines.python_of(shell)
    binary = tmp_path / "blob"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    with pytest.raises(InvalidInput, match="neither a Python interpreter"):
        pyengines.python_of(binary)
