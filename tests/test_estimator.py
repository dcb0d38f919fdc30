"""The estimator reproduces llama.cpp's published buffer sizes from header-only facts."""

from __future__ import annotations

import pytest

from llamastudio.errors import InvalidInput
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate, layer_devices
from llamastudio.fit.flags import ServerFlags
from llamastudio.hardware.profiles import parse_profile
from tests import shapes

MiB = 1024 * 1024
GiB = 1024 * MiB


def gpus(spec: str):  # type: ignore[no-untyped-def]
    return parse_profile(spec, 64 * GiB, 60 * GiB).gpus


def mib(n: int) -> float:
    return round(n / MiB, 2)


def test_reference_1_qwen3_14b_unified_auto_parallel() -> None:
    """Qwen3-14B Q6_K, -c 2048 -ngl 99 -fa on, np auto (4, unified) → KV 320.00, output 2.31."""
    est = estimate(
        shapes.qwen3_14b(), parse_server_args(["-c", "2048", "-ngl", "99", "-fa", "on"]), gpus("24GiB")
    )
    gpu = est.device("CUDA0")
    assert mib(gpu.kv) == 320.00
    assert mib(est.host.output) == 2.32  # 4 · 151936 · 4 B = 2.318 MiB (logged as 2.31 on ROCm: truncated)
    assert est.context.n_seq == 4 and est.context.unified and est.context.kv_cells == 2048
    assert gpu.layers == list(range(40))


def test_reference_2_qwen3_coder_30b_a3b() -> None:
    est = estimate(shapes.qwen3_30b_a3b(), parse_server_args(["-c", "65536"]), gpus("a100-40gb"))
    assert mib(est.device("CUDA0").kv) == 6144.00
    assert mib(est.host.output) == 2.32


def test_reference_3_gpt_oss_sliding_window_and_cpu_moe() -> None:
    args = ["-ngl", "99", "--n-cpu-moe", "99", "-c", "131072", "-fa", "on", "-np", "1"]
    est = estimate(shapes.gpt_oss_20b(), parse_server_args(args), gpus("24GiB"))
    gpu = est.device("CUDA0")
    assert mib(gpu.kv - gpu.kv_swa) == 3072.00  # 12 full-attention layers
    assert mib(gpu.kv_swa) == 18.00  # 12 SWA layers × 768 cells = pad256(128 + 512)
    assert est.context.kv_cells_swa == 768
    assert mib(est.host.output) == 0.77
    exps = sum(t.n_bytes for t in shapes.gpt_oss_20b().tensors if "_exps" in t.name)
    assert est.host.model >= exps  # every expert stays on the CPU
    assert gpu.model < exps / 10


def test_reference_4_llama3_8b_f16_and_q8_cache() -> None:
    base = ["-c", "8192", "-np", "1", "-fa", "on"]
    assert mib(estimate(shapes.llama3_8b(), parse_server_args(base)).host.kv) == 1024.00
    q8 = estimate(shapes.llama3_8b(), parse_server_args([*base, "-ctk", "q8_0", "-ctv", "q8_0"]))
    assert mib(q8.host.kv) == 544.00


def test_reference_5_deepseek_r1_mla_q8_cache() -> None:
    est = estimate(
        shapes.deepseek_r1(), parse_server_args(["-c", "32768", "-np", "1", "-ctk", "q8_0", "-fa", "on"])
    )
    assert mib(est.host.kv) == 1166.62  # 61 · 576 · 32768 · 34/32 B, K only


def test_reference_6_mixed_cache_types() -> None:
    args = ["-c", "2048", "-np", "1", "-fa", "on", "-ctk", "q8_0", "-ctv", "iq4_nl"]
    assert mib(estimate(shapes.llama3_8b(), parse_server_args(args)).host.kv) == 68.00 + 36.00


def test_output_layer_is_offloaded_first() -> None:
    flags = ServerFlags(n_gpu_layers=1)
    placement = layer_devices(32, flags, gpus("24GiB"))
    assert placement[32] == "CUDA0" and set(placement[:32]) == {"CPU"}


def test_default_split_follows_free_memory_and_ts_overrides() -> None:
    two = gpus("rtx3060,rtx3090")  # 12 + 24 GiB → a third of the layers on the first
    placement = layer_devices(80, ServerFlags(n_gpu_layers=-2), two)
    assert placement.count("CUDA0") == 27 and placement.count("CUDA1") == 54
    even = layer_devices(80, ServerFlags(n_gpu_layers=-2, tensor_split=(1, 1)), two)
    assert even.count("CUDA0") == 41


def test_cuda_pads_quantized_rows() -> None:
    """ggml-cuda pads the last row of a quantized matrix to 512 values; host weights are unpadded."""
    m = shapes.transformer(
        "llama", n_layer=1, n_embd=2880, n_head=8, n_head_kv=8, head_dim=360, n_ff=2880, vocab=1024, ctx=4096
    )
    gpu = estimate(m, ServerFlags(n_gpu_layers=-2), gpus("24GiB")).device("CUDA0")
    raw = sum(t.n_bytes for t in m.tensors if not t.name.startswith("token_embd"))
    assert gpu.model > raw


def test_quantized_v_without_flash_attention_is_refused() -> None:
    with pytest.raises(InvalidInput, match="flash attention"):
        estimate(shapes.llama3_8b(), parse_server_args(["-ctv", "q8_0", "-fa", "off"]))


def test_flag_parsing_roundtrip() -> None:
    argv = [
        "-c",
        "8192",
        "-np",
        "2",
        "-kvu",
        "-ngl",
        "all",
        "-ctk",
        "q8_0",
        "-ctv",
        "q8_0",
        "-fa",
        "on",
        "-b",
        "1024",
        "-ub",
        "256",
        "-ts",
        "3,1",
        "--n-cpu-moe",
        "4",
        "-nkvo",
        "--swa-full",
        "--no-mmap",
    ]
    flags = parse_server_args(argv)
    assert parse_server_args(flags.to_args()) == flags
    assert parse_server_args(["--ctx-size=4096"]).ctx_size == 4096
    with pytest.raises(InvalidInput, match="-ub"):
        parse_server_args(["-ub", "zero"])
    with pytest.raises(InvalidInput, match="unknown flag"):
        parse_server_args(["--frobnicate"], keep_unknown=False)
