"""Smart Auto on hardware profiles and full-size model shapes (header-only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llamastudio.errors import DoesNotFit
from llamastudio.fit.estimator import HOST
from llamastudio.fit.planner import Plan, plan
from llamastudio.hardware import Hardware
from llamastudio.hardware.profiles import parse_profile
from tests import shapes

MiB = 1 << 20
GiB = 1 << 30


def hw(spec: str, ram: int = 64) -> Hardware:
    return parse_profile(spec, ram * GiB, (ram - 4) * GiB)


def assert_within_budgets(p: Plan) -> None:
    """The planner never proposes what its own estimate says will not fit."""
    for d in p.estimate.devices:
        assert d.total <= p.budgets[d.name], (d.name, d.total, p.budgets[d.name])


def test_70b_dense_on_two_24gib_gpus() -> None:
    p = plan(shapes.llama3_70b(), hw("2x24GiB"))
    assert_within_budgets(p)
    gpu_layers = [d.layers for d in p.estimate.devices[:-1]]
    assert all(gpu_layers) and sum(len(x) for x in gpu_layers) == 80  # split over both GPUs
    assert p.flags.n_gpu_layers == -2 and len(p.flags.tensor_split) == 2
    assert p.estimate.context.n_ctx >= 4096
    assert any("layers on CUDA0,CUDA1" in r for r in p.reasons)


def test_30b_moe_on_one_24gib_gpu_offloads_experts() -> None:
    p = plan(shapes.qwen3_30b_a3b(), hw("24GiB"))
    assert_within_budgets(p)
    assert 0 < p.flags.n_cpu_moe < 48
    assert p.flags.n_gpu_layers == -2  # attention stays on the GPU; only experts move
    assert any("--n-cpu-moe" in r for r in p.reasons)
    gpu = p.estimate.device("CUDA0")
    assert gpu.layers == list(range(48))


def test_dense_70b_on_one_gpu_and_cpu_is_partial_offload() -> None:
    p = plan(shapes.llama3_70b(), hw("24GiB", ram=64))
    assert_within_budgets(p)
    assert 0 < p.flags.n_gpu_layers < 81
    assert p.estimate.host.layers and p.estimate.device("CUDA0").layers
    assert any("partial offload" in r for r in p.reasons)


def test_reservations_of_other_models_are_respected() -> None:
    free = plan(shapes.llama3_8b(), hw("24GiB"))
    busy = plan(shapes.llama3_8b(), hw("24GiB"), reserve={"CUDA0": 18 * GiB})
    assert_within_budgets(busy)
    assert busy.estimate.device("CUDA0").total <= 24 * GiB - 18 * GiB - 1024 * MiB
    assert (busy.flags.n_gpu_layers, busy.flags.ctx_size) != (free.flags.n_gpu_layers, free.flags.ctx_size)


def test_goal_max_context_reaches_training_context_when_possible() -> None:
    p = plan(shapes.llama3_8b(), hw("a100-80gb"), goal="max-context")
    assert p.estimate.context.n_ctx == 131072
    assert_within_budgets(p)
    fast = plan(shapes.llama3_8b(), hw("a100-80gb"), goal="max-speed")
    assert fast.estimate.context.n_ctx == 8192 and fast.flags.ubatch_size >= 1024


def test_quantized_kv_only_when_it_buys_context() -> None:
    roomy = plan(shapes.llama3_8b(), hw("a100-80gb"))
    assert roomy.flags.cache_type_k == "f16"
    tight = plan(shapes.llama3_8b(), hw("rtx3060"), goal="max-context")
    if tight.flags.cache_type_k == "q8_0":
        assert any("q8_0 KV cache" in r for r in tight.reasons)
        assert tight.flags.flash_attn == "on"


def test_fewest_gpus_first() -> None:
    p = plan(shapes.llama3_8b(), hw("2x24GiB"))
    assert p.flags.device == ("CUDA0",)
    assert [d.name for d in p.estimate.devices] == ["CUDA0", HOST]


def test_nothing_fits_raises_with_a_clear_message() -> None:
    with pytest.raises(DoesNotFit, match=r"does not fit at context 4096: it needs about [\d,]+ MiB"):
        plan(shapes.llama3_70b(), hw("rtx3060", ram=16))


def test_plan_cli_exit_code_3_and_json(tiny_models: dict[str, Path]) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamastudio",
            "plan",
            str(tiny_models["qwen3moe"]),
            "--hardware",
            "2x24GiB",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["command"][0] == "llama-server" and data["reasons"]
    none = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamastudio",
            "plan",
            str(tiny_models["llama"]),
            "--hardware",
            "cpu",
            "--ctx",
            "4096",
            "--reserve",
            "1000000",
        ],
        capture_output=True,
        text=True,
    )
    assert none.returncode == 3, none.stderr
    assert "does not fit" in none.stderr and "Traceback" not in none.stderr


def test_analyze_cli(tiny_models: dict[str, Path]) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamastudio",
            "analyze",
            str(tiny_models["llama"]),
            "--hardware",
            "rtx3090,rtx3060",
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert any(line.startswith("GPU 0: 2 layers (#0-1)") for line in data["lines"])
    assert data["args"]


@pytest.mark.parametrize("fa", ["on", "off"])
def test_flash_attention_the_user_chose_is_kept(fa: str) -> None:
    """Regression: Smart Auto once set -fa from the hardware whatever the configuration said."""
    from llamastudio.fit.argv import parse_server_args

    p = plan(shapes.llama3_70b(), hw("2x24GiB"), base=parse_server_args(["-fa", fa]))
    assert p.flags.flash_attn == fa
    assert f"flash attention {fa} as asked" in p.reasons
    assert p.estimate.context.flash_attn == (fa == "on")
